"""Configuration and named sizes of the autoregressive video generator."""

from __future__ import annotations

import dataclasses
from typing import Any

from larp_video.config import Config, ConfigError
from larp_video.models.llama import swiglu_hidden_dim

GENERATOR_MODES = ("class_conditional", "frame_prediction")
POSITION_EMBEDDINGS = ("learned", "sincos", "rope")


@dataclasses.dataclass
class GeneratorConfig(Config):
    """Hyperparameters of ``LARPGenerator``. The defaults are the "L" size for UCF101.

    In class-conditional mode the input sequence is [class token, token 0, ..., token N-2]. In
    frame-prediction mode it is [N conditioning tokens, separator, token 0, ..., token N-2],
    where the separator has id ``vocab_size`` in the shared token table of K+1 rows.
    """

    # "class_conditional" (one class token first) or "frame_prediction" (N conditioning tokens
    # and a separator first).
    mode: str = "class_conditional"
    # K, the tokenizer's codebook size. The output head predicts one of K token ids.
    vocab_size: int = 8192
    # N, the tokens per video clip (the tokenizer's number of queries): 1024 for LARP.
    num_tokens: int = 1024
    # Classes of the class-conditional mode (UCF101 has 101). The class table has one more row,
    # the null class used for classifier-free guidance. Unused in frame-prediction mode.
    num_classes: int = 101
    # Probability that a training label is replaced by the null class (10% in LARP), which
    # teaches the unconditional model that classifier-free guidance needs.
    class_dropout_prob: float = 0.1
    # Width D of the residual stream.
    dim: int = 1024
    # Number of decoder blocks.
    num_layers: int = 24
    # Attention heads per block; dim must be divisible by it.
    num_heads: int = 16
    # The SwiGLU hidden width is rounded up to a multiple of this (LLaMA and LARP use 256).
    multiple_of: int = 256
    # Optional factor on the SwiGLU hidden width before rounding; None keeps 2/3 * 4D.
    ffn_dim_multiplier: float | None = None
    # Epsilon of every RMSNorm.
    norm_eps: float = 1e-5
    # "learned" absolute positions (LARP's released models), fixed "sincos" absolute positions,
    # or "rope" (rotary embedding in attention, no absolute table).
    position_embedding: str = "learned"
    # RoPE frequency base; used only when position_embedding is "rope".
    rope_base: float = 10000.0
    # Dropout on the input embeddings (class, conditioning and token embeddings).
    token_dropout: float = 0.1
    # Dropout on the attention probabilities; LARP uses none.
    attention_dropout: float = 0.0
    # Dropout on the attention output projection before the residual addition.
    residual_dropout: float = 0.1
    # Dropout on the SwiGLU output before the residual addition.
    ffn_dropout: float = 0.1
    # Stochastic depth rate of the last block, rising linearly from 0 at the first; LARP uses 0.
    drop_path_rate: float = 0.0
    # Standard deviation of the N(0, std) initialisation of embeddings and linear weights.
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.mode not in GENERATOR_MODES:
            raise ConfigError(f"GeneratorConfig.mode is {self.mode!r}; use one of {GENERATOR_MODES}")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ConfigError(
                f"GeneratorConfig.position_embedding is {self.position_embedding!r}; use one of {POSITION_EMBEDDINGS}"
            )
        for name in ("vocab_size", "num_tokens", "num_classes", "dim", "num_layers", "num_heads", "multiple_of"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GeneratorConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.dim % self.num_heads != 0:
            raise ConfigError(f"GeneratorConfig.dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.position_embedding == "rope" and self.head_dim % 2 != 0:
            raise ConfigError(f"rope needs an even head width; dim / num_heads is {self.head_dim}")
        for name in ("class_dropout_prob", "token_dropout", "attention_dropout", "residual_dropout", "ffn_dropout",
                     "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"GeneratorConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def ffn_hidden_dim(self) -> int:
        return swiglu_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def frame_prediction(self) -> bool:
        return self.mode == "frame_prediction"

    @property
    def prefix_length(self) -> int:
        """Positions before the first generated token: 1 (class) or N + 1 (conditioning + separator)."""
        return self.num_tokens + 1 if self.frame_prediction else 1

    @property
    def sequence_length(self) -> int:
        """Maximum input sequence length, the prefix plus N - 1 tokens, and the rows of the position table."""
        return self.prefix_length + self.num_tokens - 1

    @property
    def separator_token(self) -> int:
        """Id of the frame-prediction separator token, one past the codebook."""
        return self.vocab_size

    @property
    def input_vocab_size(self) -> int:
        """Rows of the token embedding table: K, plus the separator in frame-prediction mode."""
        return self.vocab_size + 1 if self.frame_prediction else self.vocab_size

    @classmethod
    def tiny(cls, **overrides: Any) -> GeneratorConfig:
        return generator_config("tiny", **overrides)

    @classmethod
    def B(cls, **overrides: Any) -> GeneratorConfig:  # noqa: N802 (size names are upper case)
        return generator_config("B", **overrides)

    @classmethod
    def L(cls, **overrides: Any) -> GeneratorConfig:  # noqa: N802
        return generator_config("L", **overrides)

    @classmethod
    def LP(cls, **overrides: Any) -> GeneratorConfig:  # noqa: N802
        return generator_config("LP", **overrides)


# Named sizes. B, L and LP are the reference implementation's llama-abs-B, -L and -LP. With
# vocab 8192, 1024 tokens and 101 classes they have 98.4M, 326.3M and 632.0M parameters; the
# reference's comments (111M, 343M) count a 16384-token vocabulary. "tiny" is for tests and
# matches the reference test checkpoint (vocab 64, 16 tokens, 5 classes).
GENERATOR_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"dim": 64, "num_layers": 2, "num_heads": 4, "multiple_of": 32, "vocab_size": 64, "num_tokens": 16,
             "num_classes": 5},
    "B": {"dim": 768, "num_layers": 12, "num_heads": 12},
    "L": {"dim": 1024, "num_layers": 24, "num_heads": 16},
    "LP": {"dim": 1280, "num_layers": 30, "num_heads": 20},
}


def generator_config(size: str, **overrides: Any) -> GeneratorConfig:
    """Return the config of a named size ("tiny", "B", "L" or "LP") with ``overrides`` applied."""
    if size not in GENERATOR_SIZES:
        raise ConfigError(f"unknown generator size {size!r}; use one of {sorted(GENERATOR_SIZES)}")
    return GeneratorConfig.from_dict({**GENERATOR_SIZES[size], **overrides})
