"""Stochastic vector quantizer (SVQ) with a cosine-similarity codebook.

Dimension legend:
    B  batch    N  tokens per clip    d  code dimension    K  codebook size
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (B, N, d) unit code vectors; gradients flow to the normalised input
    indices: torch.Tensor  # (B, N) int64
    loss: torch.Tensor  # codebook, commitment and entropy losses, each times its weight
    codebook_loss: torch.Tensor  # MSE(code, sg(z)): moves the codes
    commitment_loss: torch.Tensor  # MSE(sg(code), z): moves the encoder
    entropy_loss: torch.Tensor  # mean per-token entropy - entropy of the batch-mean distribution


def codebook_entropy_loss(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token entropy minus the entropy of the mean code distribution, for (M, K) similarities.

    Low when each token is sure of its code and the M tokens together spread over many codes.
    """
    log_probabilities = torch.log_softmax(similarity / temperature, dim=-1)  # (M, K)
    probabilities = log_probabilities.exp()
    token_entropy = -(probabilities * log_probabilities).sum(-1).mean()
    mean_probabilities = probabilities.mean(0)  # (K,)
    batch_entropy = -(mean_probabilities * torch.log(mean_probabilities.clamp_min(1e-12))).sum()
    return token_entropy - batch_entropy


class StochasticVectorQuantizer(nn.Module):
    """Vector quantizer over L2-normalised vectors with a plain (non-EMA) codebook.

    Both the input vector z and every codebook row are L2-normalised, so the similarity is the
    cosine. With ``sample=True`` the index is drawn from softmax(cos / temperature); otherwise it
    is the argmax of the cosine. The forward value is the unit code vector and the backward pass
    is straight-through to the normalised z. All of it runs in float32, also under autocast.

    With ``entropy_loss_weight > 0`` an entropy loss over softmax(cos / entropy_temperature)
    rewards confident choices per token and a spread of choices over the batch, which keeps a
    codebook from collapsing to a few codes on small datasets. Off by default, as in LARP.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        temperature: float = 0.03,
        codebook_loss_weight: float = 1.0,
        commitment_loss_weight: float = 0.25,
        entropy_loss_weight: float = 0.0,
        entropy_temperature: float = 0.01,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"quantizer temperature must be positive, got {temperature}")
        if entropy_temperature <= 0:
            raise ValueError(f"entropy temperature must be positive, got {entropy_temperature}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.temperature = temperature
        self.codebook_loss_weight = codebook_loss_weight
        self.commitment_loss_weight = commitment_loss_weight
        self.entropy_loss_weight = entropy_loss_weight
        self.entropy_temperature = entropy_temperature
        self.codebook = nn.Embedding(codebook_size, dim)
        nn.init.kaiming_uniform_(self.codebook.weight)

    def unit_codebook(self) -> torch.Tensor:
        """Return the (K, d) L2-normalised codebook in float32."""
        return F.normalize(self.codebook.weight.float(), dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the unit code vectors (..., d) of ``indices`` (...,)."""
        self._check_indices(indices)
        return F.embedding(indices, self.unit_codebook())

    def forward(self, z: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> QuantizerOutput:
        if z.dim() != 3 or z.shape[-1] != self.dim:
            raise ValueError(f"quantizer input must be (batch, tokens, {self.dim}), got {tuple(z.shape)}")

        with torch.autocast(device_type=z.device.type, enabled=False):
            z = F.normalize(z.float(), dim=-1)  # (B, N, d)
            codebook = self.unit_codebook()  # (K, d)
            similarity = z @ codebook.t()  # (B, N, K) cosines in [-1, 1]

            if sample:
                probabilities = torch.softmax(similarity.flatten(0, 1) / self.temperature, dim=-1)
                indices = torch.multinomial(probabilities, 1, generator=generator).view(z.shape[:2])
            else:
                indices = similarity.argmax(dim=-1)  # (B, N)

            code = F.embedding(indices, codebook)  # (B, N, d)
            codebook_loss = F.mse_loss(code, z.detach())
            commitment_loss = F.mse_loss(code.detach(), z)
            loss = self.codebook_loss_weight * codebook_loss + self.commitment_loss_weight * commitment_loss
            entropy_loss = similarity.new_zeros(())
            if self.entropy_loss_weight > 0:
                entropy_loss = codebook_entropy_loss(similarity.flatten(0, 1), self.entropy_temperature)
                loss = loss + self.entropy_loss_weight * entropy_loss
            quantized = z + (code - z).detach()

        return QuantizerOutput(quantized, indices, loss, codebook_loss, commitment_loss, entropy_loss)

    def _check_indices(self, indices: torch.Tensor) -> None:
        if indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"code indices must be int64 (or int32), got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"code indices must lie in [0, {self.codebook_size - 1}], got values in "
                f"[{int(indices.min())}, {int(indices.max())}]; were these tokens made by another model?"
            )

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}, temperature={self.temperature}"
