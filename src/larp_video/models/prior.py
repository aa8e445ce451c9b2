"""The training-time autoregressive prior over the tokenizer's code vectors.

A small GPT reads the quantized unit vectors of tokens 0..N-2 and predicts a unit vector for
each of tokens 1..N-1; its logits are the cosines of that prediction with the (detached)
normalised codebook, and its loss is the cross-entropy against the code indices. Training it
jointly pushes the encoder towards token orders that an AR model predicts well.

Dimension legend:
    B  batch    N  tokens per clip    d  code dimension    K  codebook size    W  prior width
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from larp_video.config import Config

# Reference prior sizes by name: (layers, heads, width). "gptc-tiny" is a test size.
PRIOR_PRESETS = {
    "gptc-tiny": (2, 2, 32),
    "gptc-XXS": (6, 4, 256),
    "gptc-XS": (6, 6, 384),
    "gptc-S": (12, 6, 384),
    "gptc-M": (12, 8, 512),
    "gptc-B": (12, 12, 768),
    "gptc-L": (24, 16, 1024),
}


@dataclasses.dataclass
class PriorConfig(Config):
    depth: int = 12  # transformer blocks ("gptc-S", the size of the released models)
    heads: int = 6  # attention heads
    width: int = 384  # hidden width W
    max_positions: int = 1024  # rows of the learned position table; must be >= tokens per clip
    dropout: float = 0.1  # on embeddings, residual branches and attention weights
    rounds: int = 2  # prediction rounds per step; round 1 is teacher forcing
    scheduled_sampling_max_ratio: float = 0.5  # final fraction of inputs replaced by samples
    scheduled_sampling_peak_fraction: float = 0.3  # fraction of training over which the ratio ramps up
    scheduled_sampling: bool = True  # False replaces every input after round 1 (ratio 1)
    logit_temperature: float = 1.0  # logits = cosine / temperature
    average_rounds: bool = True  # loss over all rounds; False keeps only the last round

    @classmethod
    def preset(cls, name: str, **overrides) -> "PriorConfig":
        if name not in PRIOR_PRESETS:
            raise ValueError(f"unknown prior size {name!r}; choose one of {sorted(PRIOR_PRESETS)}")
        depth, heads, width = PRIOR_PRESETS[name]
        return cls(depth=depth, heads=heads, width=width, **overrides)


class PriorOutput(NamedTuple):
    loss: torch.Tensor  # cross-entropy averaged over rounds and positions
    logits: torch.Tensor  # (rounds, B, N-1, K) logits of tokens 1..N-1
    top1_accuracy: torch.Tensor  # of the teacher-forced round
    top5_accuracy: torch.Tensor
    sampling_ratio: float  # fraction of inputs replaced by samples in rounds after the first


def scheduled_sampling_ratio(step: int, total_steps: int, max_ratio: float, peak_fraction: float) -> float:
    """Return the replacement ratio: linear from 0 to ``max_ratio`` over the first
    ``peak_fraction`` of ``total_steps``, then constant."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive to schedule the prior's sampling, got {total_steps}")
    if peak_fraction <= 0:
        return max_ratio
    return min(step / (total_steps * peak_fraction) * max_ratio, max_ratio)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"prior width {width} is not divisible by its {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)  # (B, H, L, W/H)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.resid_drop(self.proj(out))


class PriorBlock(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)
        self.mlp_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp_drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class ARPrior(nn.Module):
    """GPT over continuous d-dimensional inputs with d-dimensional unit-vector outputs."""

    def __init__(self, config: PriorConfig, code_dim: int):
        super().__init__()
        self.config = config
        self.input_proj = nn.Linear(code_dim, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_positions, config.width))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(PriorBlock(config.width, config.heads, config.dropout) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, code_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT initialisation: N(0, 0.02) weights and position table, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_embed, std=0.02)

    def predict(self, codes: torch.Tensor) -> torch.Tensor:
        """Return (B, N, d) unit vectors: position 0 is ``codes[:, 0]``, position i >= 1 the
        prediction of token i from tokens 0..i-1."""
        length = codes.shape[1]
        if length > self.config.max_positions:
            raise ValueError(
                f"the prior has {self.config.max_positions} positions but the clip has {length} tokens; "
                "raise PriorConfig.max_positions"
            )
        context = codes[:, :-1]  # (B, N-1, d)
        h = self.drop(self.input_proj(context) + self.pos_embed[:, : length - 1])  # (B, N-1, W)
        for block in self.blocks:
            h = block(h)
        prediction = self.head(self.norm(h))  # (B, N-1, d)
        return F.normalize(torch.cat([codes[:, :1], prediction], dim=1), dim=-1)

    def logits(self, codes: torch.Tensor, unit_codebook: torch.Tensor) -> torch.Tensor:
        """Return (B, N-1, K) cosine logits of tokens 1..N-1."""
        prediction = self.predict(codes)[:, 1:]
        return prediction.float() @ unit_codebook.detach().t() / self.config.logit_temperature

    def loss(
        self,
        codes: torch.Tensor,
        indices: torch.Tensor,
        unit_codebook: torch.Tensor,
        sampling_ratio: float,
        generator: torch.Generator | None = None,
    ) -> PriorOutput:
        """Run the prediction rounds with scheduled sampling and return the loss breakdown.

        ``codes`` (B, N, d) are the straight-through quantized vectors, ``indices`` (B, N) their
        code indices (the targets), ``unit_codebook`` (K, d) the normalised codebook. After each
        round, new indices are sampled from its logits; each position except 0 independently
        takes the sampled (detached) code vector as its next input with probability
        ``sampling_ratio``. One replacement mask serves all rounds.
        """
        batch, length, dim = codes.shape
        targets = indices[:, 1:]  # (B, N-1)
        replace = torch.rand(batch, length - 1, 1, device=codes.device, generator=generator) < sampling_ratio

        round_logits = []
        inputs = codes
        for round_index in range(self.config.rounds):
            logits = self.logits(inputs, unit_codebook)  # (B, N-1, K)
            round_logits.append(logits)
            if round_index == self.config.rounds - 1:
                break
            with torch.no_grad():
                probabilities = torch.softmax(logits.float().flatten(0, 1), dim=-1)
                sampled = torch.multinomial(probabilities, 1, generator=generator).view(batch, length - 1)
                sampled_codes = F.embedding(sampled, unit_codebook.detach()).to(codes.dtype)  # (B, N-1, d)
            inputs = torch.cat([codes[:, :1], torch.where(replace, sampled_codes, codes[:, 1:])], dim=1)

        stacked = torch.stack(round_logits if self.config.average_rounds else round_logits[-1:])  # (R, B, N-1, K)
        loss = F.cross_entropy(stacked.flatten(0, 2), targets.expand(stacked.shape[0], -1, -1).flatten())
        top1, top5 = _topk_accuracy(round_logits[0].detach(), targets, (1, 5))
        return PriorOutput(loss, stacked, top1, top5, float(sampling_ratio))


def _topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    largest_k = min(max(ks), logits.shape[-1])
    top = logits.topk(largest_k, dim=-1).indices  # (B, N-1, k)
    hits = top == targets.unsqueeze(-1)
    return [hits[..., : min(k, largest_k)].any(dim=-1).float().mean() for k in ks]
