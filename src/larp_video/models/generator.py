"""The autoregressive video generator: a LLaMA-style decoder over LARP token ids.

Dimension legend used in shape comments:
    B  batch             N  tokens per clip (config.num_tokens)    n  tokens given (n <= N)
    P  prefix length     L  positions fed in one call             D  width
    K  codebook size (config.vocab_size)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from larp_video.models.generator_config import GENERATOR_SIZES, GeneratorConfig, generator_config
from larp_video.models.hub import PretrainedMixin
from larp_video.models.layers import sincos_1d
from larp_video.models.llama import DecoderBlock, KVCache, RotaryEmbedding
from larp_video.models.sampling import generate

__all__ = ["GENERATOR_SIZES", "GeneratorConfig", "GeneratorOutput", "LARPGenerator", "generator_config"]


@dataclasses.dataclass
class GeneratorOutput:
    """Result of ``LARPGenerator.forward``."""

    logits: torch.Tensor  # (B, n, K); logits[:, j] predicts token j
    loss: torch.Tensor | None  # mean cross-entropy of the n tokens, or None when not requested


class LARPGenerator(nn.Module, PretrainedMixin):
    """Decoder-only transformer that models LARP token sequences, class- or frame-conditioned.

    The condition becomes a prefix of P embeddings: one class embedding (class-conditional
    mode), or the N conditioning tokens plus a separator token (frame-prediction mode). The
    tokens follow, so logit j is computed at sequence position P - 1 + j, whose input is the
    last prefix element for j = 0 and token j - 1 otherwise, and it predicts token j.
    """

    config_class = GeneratorConfig

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        dim = config.dim

        self.token_embedding = nn.Embedding(config.input_vocab_size, dim)
        # Class-conditional only: row num_classes is the null class.
        self.class_embedding = None if config.frame_prediction else nn.Embedding(config.num_classes + 1, dim)
        self.token_dropout = nn.Dropout(config.token_dropout)

        self.rotary = None
        if config.position_embedding == "learned":
            self.position_embedding = nn.Parameter(torch.zeros(config.sequence_length, dim))
        elif config.position_embedding == "sincos":
            table = sincos_1d(dim, torch.arange(config.sequence_length))  # (P + N - 1, D)
            self.register_buffer("position_embedding", table, persistent=False)
        else:
            self.position_embedding = None
            self.rotary = RotaryEmbedding(config.head_dim, config.sequence_length, config.rope_base)

        last = max(config.num_layers - 1, 1)
        drop_path_rates = [config.drop_path_rate * index / last for index in range(config.num_layers)]
        self.blocks = nn.ModuleList(
            DecoderBlock(
                dim,
                config.num_heads,
                config.ffn_hidden_dim,
                norm_eps=config.norm_eps,
                attention_dropout=config.attention_dropout,
                residual_dropout=config.residual_dropout,
                ffn_dropout=config.ffn_dropout,
                drop_path_rate=rate,
            )
            for rate in drop_path_rates
        )
        self.final_norm = nn.RMSNorm(dim, eps=config.norm_eps)
        self.head = nn.Linear(dim, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise embeddings and linear weights N(0, initializer_range) and the head to zero."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)
        if isinstance(self.position_embedding, nn.Parameter):
            nn.init.normal_(self.position_embedding, mean=0.0, std=std)
        nn.init.zeros_(self.head.weight)

    # -----------------------------------------------------------------------------------------
    # Inputs
    # -----------------------------------------------------------------------------------------

    def prefix_embeddings(self, condition: torch.Tensor) -> torch.Tensor:
        """Embed the condition as the (B, P, D) prefix of the sequence.

        Class-conditional: ``condition`` is (B,) integer class labels in [0, num_classes), and a
        negative label selects the null class. In training mode each label is replaced by the
        null class with probability ``class_dropout_prob``.
        Frame prediction: ``condition`` is (B, N) integer token ids in [0, K), the tokens of the
        clip made from the given first frames. This method appends the separator token.
        """
        config = self.config
        if condition.is_floating_point() or condition.is_complex():
            raise TypeError(f"condition must be an integer tensor, got dtype {condition.dtype}")

        if config.frame_prediction:
            if condition.ndim != 2 or condition.shape[1] != config.num_tokens:
                raise ValueError(
                    f"frame prediction expects conditioning tokens of shape (B, {config.num_tokens}), "
                    f"got {tuple(condition.shape)}"
                )
            _check_token_range(condition, config.vocab_size, "conditioning tokens")
            separator = condition.new_full((condition.shape[0], 1), config.separator_token)
            return self.token_embedding(torch.cat([condition, separator], dim=1))  # (B, N + 1, D)

        if condition.ndim != 1:
            raise ValueError(f"class-conditional mode expects labels of shape (B,), got {tuple(condition.shape)}")
        if condition.numel() > 0 and int(condition.max()) >= config.num_classes:
            raise ValueError(
                f"class label {int(condition.max())} is out of range for {config.num_classes} classes; "
                "use labels in [0, num_classes) or a negative label for the null class"
            )
        null = torch.full_like(condition, config.num_classes)
        labels = torch.where(condition < 0, null, condition)
        if self.training and config.class_dropout_prob > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < config.class_dropout_prob
            labels = torch.where(dropped, null, labels)
        return self.class_embedding(labels)[:, None]  # (B, 1, D)

    def null_condition(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Return (B,) labels of the null class, the unconditional input of classifier-free guidance."""
        if self.config.frame_prediction:
            raise ValueError(
                "frame-prediction models have no null condition, so classifier-free guidance is unavailable"
            )
        return torch.full((batch_size,), -1, dtype=torch.long, device=device)

    # -----------------------------------------------------------------------------------------
    # Transformer
    # -----------------------------------------------------------------------------------------

    def decode(self, embeddings: torch.Tensor, *, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """Run the decoder on input embeddings (B, L, D) at positions start .. start+L-1.

        Returns the final-normalised hidden states (B, L, D); ``self.head`` turns them into
        logits. Without ``cache`` the embeddings must be the whole sequence so far (start 0).
        """
        length = embeddings.shape[1]
        if start + length > self.config.sequence_length:
            raise ValueError(
                f"positions up to {start + length} exceed the model's sequence length {self.config.sequence_length} "
                f"(prefix {self.config.prefix_length} + {self.config.num_tokens} - 1 tokens)"
            )
        hidden = self.token_dropout(embeddings)
        if self.position_embedding is not None:
            hidden = hidden + self.position_embedding[start : start + length]  # (B, L, D)

        for index, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache.layers[index]
            hidden = block(hidden, start=start, cache=layer_cache, rotary=self.rotary)
        return self.final_norm(hidden)

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor, *, return_loss: bool = True) -> GeneratorOutput:
        """Predict every token of ``tokens`` from the condition and the tokens before it.

        ``tokens`` (B, n) int64 are target token ids, n <= N, normally a whole clip. The model's
        input is the prefix and tokens 0 .. n-2 (the last token is only a target), and
        ``logits[:, j]`` predicts ``tokens[:, j]``. The loss is the mean cross-entropy over all
        n tokens; in frame-prediction mode the conditioning tokens are never targets.
        """
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.config.num_tokens:
            raise ValueError(
                f"tokens must have shape (B, n) with 1 <= n <= {self.config.num_tokens}, got {tuple(tokens.shape)}"
            )
        if tokens.is_floating_point():
            raise TypeError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
        _check_token_range(tokens, self.config.vocab_size, "tokens")

        prefix = self.prefix_embeddings(condition)  # (B, P, D)
        if prefix.shape[0] != tokens.shape[0]:
            raise ValueError(f"condition has batch size {prefix.shape[0]} but tokens have {tokens.shape[0]}")
        inputs = torch.cat([prefix, self.token_embedding(tokens[:, :-1])], dim=1)  # (B, P + n - 1, D)
        hidden = self.decode(inputs)
        logits = self.head(hidden[:, self.config.prefix_length - 1 :])  # (B, n, K)

        loss = None
        if return_loss:
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        return GeneratorOutput(logits=logits, loss=loss)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Split the parameters into optimizer groups: linear weights decay, the rest does not.

        Embeddings, the position table and RMSNorm weights get no weight decay, as in LARP's
        AdamW setup. Pass the result to the optimizer, e.g. ``torch.optim.AdamW(groups, lr=...)``.
        """
        linear_weights = {id(module.weight) for module in self.modules() if isinstance(module, nn.Linear)}
        decay = [parameter for parameter in self.parameters() if id(parameter) in linear_weights]
        no_decay = [parameter for parameter in self.parameters() if id(parameter) not in linear_weights]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    # -----------------------------------------------------------------------------------------
    # Sampling and loading
    # -----------------------------------------------------------------------------------------

    # Bound as a method: model.generate(condition, num_tokens, cfg_scale=..., ...).
    generate = generate

    @classmethod
    def _from_released(cls, released_config: dict[str, Any], state_dict: dict[str, torch.Tensor], **overrides: Any):
        from larp_video.models.released_generator import load_released_generator

        return load_released_generator(released_config, state_dict, **overrides)


def _check_token_range(tokens: torch.Tensor, vocab_size: int, name: str) -> None:
    if tokens.numel() == 0:
        return
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"{name} must be in [0, {vocab_size}), got values from {low} to {high}")
