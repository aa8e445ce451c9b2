"""LARP video tokenizer: a ViT encoder with learned holistic queries, a stochastic VQ
bottleneck, a ViT decoder with patch queries, and a training-time AR prior.

Dimension legend:
    B  batch                    C  channels (3)
    T  frames per clip          S  frame side (height = width)
    P  patch tokens             N  holistic tokens (queries) per clip
    D  transformer width        d  code dimension            K  codebook size
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from larp_video.config import Config
from larp_video.models.hub import PretrainedMixin
from larp_video.models.layers import Transformer, sincos_1d, sincos_3d, xavier_init_linears
from larp_video.models.prior import ARPrior, PriorConfig, scheduled_sampling_ratio
from larp_video.models.quantizer import StochasticVectorQuantizer

# Encoder and decoder sizes of the reference models: (width, depth, heads).
TOKENIZER_SIZES = {
    "S": (512, 6, 8),
    "B": (768, 8, 12),
    "L": (768, 12, 12),
}


@dataclasses.dataclass
class TokenizerConfig(Config):
    num_frames: int = 16  # T, frames per clip
    image_size: int = 128  # S, frame height and width
    in_channels: int = 3
    temporal_patch_size: int = 4  # patch extent in frames
    patch_size: int = 8  # patch extent in pixels
    encoder_width: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    decoder_width: int = 768
    decoder_depth: int = 12
    decoder_heads: int = 12
    mlp_ratio: float = 4.0
    num_tokens: int = 1024  # N, tokens per clip (learned queries)
    code_dim: int = 16  # d, bottleneck width
    codebook_size: int = 8192  # K
    quantizer_temperature: float = 0.03  # softmax temperature of stochastic code sampling
    codebook_loss_weight: float = 1.0
    commitment_loss_weight: float = 0.25
    entropy_loss_weight: float = 0.0  # codebook entropy loss; counters collapse on small datasets
    entropy_temperature: float = 0.01  # softmax temperature of the entropy loss
    query_init_std: float = 0.02  # std of the queries' N(0, std) initialisation
    latent_pos_base: float = 10000.0  # base of the decoder's 1D sin-cos table over tokens
    prior: PriorConfig | None = dataclasses.field(default_factory=PriorConfig)  # None: no prior

    def __post_init__(self) -> None:
        if self.num_frames % self.temporal_patch_size != 0:
            raise ValueError(
                f"num_frames={self.num_frames} must be a multiple of temporal_patch_size={self.temporal_patch_size}"
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.prior is not None and self.prior.max_positions < self.num_tokens:
            raise ValueError(
                f"prior.max_positions={self.prior.max_positions} is smaller than num_tokens={self.num_tokens}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        """The patch grid (t, h, w)."""
        side = self.image_size // self.patch_size
        return self.num_frames // self.temporal_patch_size, side, side

    @property
    def num_patches(self) -> int:
        return math.prod(self.grid)

    @property
    def bits_per_clip(self) -> float:
        return self.num_tokens * math.log2(self.codebook_size)

    @classmethod
    def preset(cls, name: str, **overrides) -> "TokenizerConfig":
        """Return a named size: "tiny" (tests), or the reference sizes "S", "B", "L".

        S, B and L use the reference clip (16 x 128 x 128), 1024 tokens, codebook 8192 and the
        "gptc-S" prior. ``overrides`` replace any field.
        """
        if name == "tiny":
            values = dict(
                num_frames=8, image_size=32, encoder_width=64, encoder_depth=2, encoder_heads=4,
                decoder_width=64, decoder_depth=2, decoder_heads=4, num_tokens=16, codebook_size=64,
                prior=PriorConfig.preset("gptc-tiny", max_positions=16),
            )
        elif name in TOKENIZER_SIZES:
            width, depth, heads = TOKENIZER_SIZES[name]
            values = dict(
                encoder_width=width, encoder_depth=depth, encoder_heads=heads,
                decoder_width=width, decoder_depth=depth, decoder_heads=heads,
            )
        else:
            raise ValueError(f"unknown tokenizer size {name!r}; choose one of {['tiny', *TOKENIZER_SIZES]}")
        values.update(overrides)
        if isinstance(values.get("prior"), dict):
            values["prior"] = PriorConfig.from_dict(values["prior"])
        return cls(**values)


class EncodeOutput(NamedTuple):
    indices: torch.Tensor  # (B, N) int64 code indices
    codes: torch.Tensor  # (B, N, d) unit code vectors (straight-through)
    vq_loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


@dataclasses.dataclass
class TokenizerOutput:
    """Result of ``LARPTokenizer.forward``; every loss is a scalar tensor."""

    reconstruction: torch.Tensor  # (B, C, T, S, S), not clamped
    indices: torch.Tensor  # (B, N)
    vq_loss: torch.Tensor  # weighted codebook + commitment (+ entropy) loss
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    prior_loss: torch.Tensor | None  # cross-entropy of the AR prior; None without a prior
    prior_top1_accuracy: torch.Tensor | None
    prior_top5_accuracy: torch.Tensor | None
    scheduled_sampling_ratio: float | None
    code_counts: torch.Tensor  # (K,) how often each code was chosen in this batch

    @property
    def codebook_usage(self) -> torch.Tensor:
        """Fraction of codebook entries used at least once in this batch."""
        return (self.code_counts > 0).float().mean()


class PatchEmbed3D(nn.Module):
    """Non-overlapping (pt, p, p) patches projected to width D by a strided Conv3d.

    The convolution is computed as patchify + matmul, which equals the Conv3d and runs faster
    on CPUs, especially in bf16.
    """

    def __init__(self, in_channels: int, width: int, temporal_patch_size: int, patch_size: int):
        super().__init__()
        self.patch = (temporal_patch_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, width, kernel_size=self.patch, stride=self.patch)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = video.shape
        pt, ph, pw = self.patch
        patches = video.reshape(batch, channels, frames // pt, pt, height // ph, ph, width // pw, pw)
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, t, h, w, C, pt, p, p)
        patches = patches.reshape(batch, -1, channels * pt * ph * pw)  # (B, P, C*pt*p*p)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)  # (B, P, D)


class OutputHead(nn.Module):
    """LayerNorm (eps 1e-6) and a zero-initialised Linear D -> pt*p*p*C."""

    def __init__(self, width: int, patch_values: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.linear = nn.Linear(width, patch_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class LARPTokenizer(nn.Module, PretrainedMixin):
    """Turns (B, 3, T, S, S) videos in [0, 1] into N discrete tokens per clip and back.

    ``encode`` and ``decode`` are deterministic (argmax codes) unless sampling is requested;
    ``forward`` is the training pass with sampled codes and the prior loss.
    """

    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        c = config
        grid_t, grid_h, _ = c.grid

        # Encoder side: patch tokens with a fixed 3D table, then the learned queries.
        self.patch_embed = PatchEmbed3D(c.in_channels, c.encoder_width, c.temporal_patch_size, c.patch_size)
        self.register_buffer("encoder_pos_embed", sincos_3d(c.encoder_width, grid_h, grid_t).unsqueeze(0))
        self.queries = nn.Parameter(torch.empty(c.num_tokens, c.encoder_width))
        self.encoder = Transformer(c.encoder_width, c.encoder_depth, c.encoder_heads, c.mlp_ratio)

        # Bottleneck: D -> d, quantize, d -> D.
        self.to_code = nn.Linear(c.encoder_width, c.code_dim)
        self.quantizer = StochasticVectorQuantizer(
            c.codebook_size,
            c.code_dim,
            c.quantizer_temperature,
            c.codebook_loss_weight,
            c.commitment_loss_weight,
            c.entropy_loss_weight,
            c.entropy_temperature,
        )
        self.from_code = nn.Linear(c.code_dim, c.decoder_width)

        # Decoder side: latents with a fixed 1D table, then patch queries (3D table + type vector).
        latent_positions = torch.arange(c.num_tokens)
        self.register_buffer(
            "decoder_latent_pos_embed", sincos_1d(c.decoder_width, latent_positions, c.latent_pos_base).unsqueeze(0)
        )
        self.register_buffer("decoder_patch_pos_embed", sincos_3d(c.decoder_width, grid_h, grid_t).unsqueeze(0))
        self.patch_query_embed = nn.Parameter(torch.empty(1, 1, c.decoder_width))
        self.decoder = Transformer(c.decoder_width, c.decoder_depth, c.decoder_heads, c.mlp_ratio)
        patch_values = c.temporal_patch_size * c.patch_size * c.patch_size * c.in_channels
        self.head = OutputHead(c.decoder_width, patch_values)

        self.prior = ARPrior(c.prior, c.code_dim) if c.prior is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform Linears with zero bias, N(0, std) queries, a zero output head.

        The patch embedding is initialised as the equivalent flattened Linear. The prior keeps
        its own GPT initialisation.
        """
        for name, child in self.named_children():
            if name != "prior":
                xavier_init_linears(child)
        nn.init.xavier_uniform_(self.patch_embed.proj.weight.view(self.patch_embed.proj.weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.queries, std=self.config.query_init_std)
        nn.init.normal_(self.patch_query_embed, std=0.02)
        nn.init.zeros_(self.head.linear.weight)
        nn.init.zeros_(self.head.linear.bias)

    # ----------------------------------------------------------------------------------------
    # Encoding
    # ----------------------------------------------------------------------------------------

    def encode_hidden(self, video: torch.Tensor) -> torch.Tensor:
        """Return the (B, N, D) encoder output at the query positions."""
        self.check_video(video)
        video = video.to(self.patch_embed.proj.weight.dtype)  # no-op unless the weights are bf16
        patches = self.patch_embed(video) + self.encoder_pos_embed  # (B, P, D)
        queries = self.queries.unsqueeze(0).expand(video.shape[0], -1, -1).to(patches.dtype)  # (B, N, D)
        keep_queries = slice(patches.shape[1], None)
        return self.encoder(torch.cat([patches, queries], dim=1), keep=keep_queries)  # (B, N, D)

    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """Return the (B, N, d) latents before quantization."""
        return self.to_code(self.encode_hidden(video))

    def encode(
        self, video: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> EncodeOutput:
        """Tokenize (B, 3, T, S, S) videos in [0, 1]; argmax codes unless ``sample``."""
        quantized = self.quantizer(self.encode_latents(video), sample=sample, generator=generator)
        return EncodeOutput(
            quantized.indices,
            quantized.quantized,
            quantized.loss,
            quantized.codebook_loss,
            quantized.commitment_loss,
        )

    # ----------------------------------------------------------------------------------------
    # Decoding
    # ----------------------------------------------------------------------------------------

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode (B, N, d) code vectors to (B, 3, T, S, S) videos (not clamped)."""
        c = self.config
        if codes.dim() != 3 or codes.shape[1:] != (c.num_tokens, c.code_dim):
            raise ValueError(f"codes must be (batch, {c.num_tokens}, {c.code_dim}), got {tuple(codes.shape)}")
        codes = codes.to(self.from_code.weight.dtype)  # no-op unless the weights are bf16
        latents = self.from_code(codes) + self.decoder_latent_pos_embed  # (B, N, D)
        patch_queries = self.decoder_patch_pos_embed + self.patch_query_embed  # (1, P, D)
        patch_queries = patch_queries.expand(codes.shape[0], -1, -1).to(latents.dtype)
        keep_patches = slice(c.num_tokens, None)
        hidden = self.decoder(torch.cat([latents, patch_queries], dim=1), keep=keep_patches)  # (B, P, D)
        patches = self.head(hidden)  # (B, P, pt*p*p*C)
        return self.unpatchify(patches)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode (B, N) code indices to (B, 3, T, S, S) videos (not clamped)."""
        if indices.dim() != 2 or indices.shape[1] != self.config.num_tokens:
            raise ValueError(
                f"indices must be (batch, {self.config.num_tokens}), got {tuple(indices.shape)}"
            )
        return self.decode_codes(self.quantizer.lookup(indices.to(self.device)))

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, pt*p*p*C) with the channel innermost -> (B, C, T, S, S)."""
        c = self.config
        grid_t, grid_h, grid_w = c.grid
        pt, p = c.temporal_patch_size, c.patch_size
        batch = patches.shape[0]
        video = patches.reshape(batch, grid_t, grid_h, grid_w, pt, p, p, c.in_channels)
        video = video.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, t, pt, h, p, w, p)
        return video.reshape(batch, c.in_channels, c.num_frames, c.image_size, c.image_size)

    # ----------------------------------------------------------------------------------------
    # Training pass
    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        video: torch.Tensor,
        *,
        step: int = 0,
        total_steps: int | None = None,
        sample_codes: bool | None = None,
        compute_prior: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> TokenizerOutput:
        """Encode, quantize, decode and (in training) run the prior.

        ``step`` and ``total_steps`` drive the prior's scheduled-sampling ramp. Codes are
        sampled and the prior runs when the module is in training mode, unless
        ``sample_codes``/``compute_prior`` say otherwise.
        """
        sample_codes = self.training if sample_codes is None else sample_codes
        compute_prior = (self.training and self.prior is not None) if compute_prior is None else compute_prior

        encoded = self.encode(video, sample=sample_codes, generator=generator)
        reconstruction = self.decode_codes(encoded.codes)
        code_counts = torch.bincount(encoded.indices.flatten(), minlength=self.config.codebook_size)

        prior_loss = top1 = top5 = ratio = None
        if compute_prior:
            if self.prior is None:
                raise ValueError("compute_prior=True but this tokenizer was built without a prior (config.prior is None)")
            ratio = self.prior_sampling_ratio(step, total_steps)
            prior = self.prior.loss(
                encoded.codes, encoded.indices, self.quantizer.unit_codebook(), ratio, generator=generator
            )
            prior_loss, top1, top5 = prior.loss, prior.top1_accuracy, prior.top5_accuracy

        return TokenizerOutput(
            reconstruction=reconstruction,
            indices=encoded.indices,
            vq_loss=encoded.vq_loss,
            codebook_loss=encoded.codebook_loss,
            commitment_loss=encoded.commitment_loss,
            prior_loss=prior_loss,
            prior_top1_accuracy=top1,
            prior_top5_accuracy=top5,
            scheduled_sampling_ratio=ratio,
            code_counts=code_counts,
        )

    def prior_sampling_ratio(self, step: int, total_steps: int | None) -> float:
        """Fraction of prior inputs replaced by samples after round 1 at ``step``."""
        prior_config = self.config.prior
        if not prior_config.scheduled_sampling:
            return 1.0
        if total_steps is None:
            raise ValueError("the prior's scheduled sampling needs total_steps (the length of training in steps)")
        return scheduled_sampling_ratio(
            step, total_steps, prior_config.scheduled_sampling_max_ratio, prior_config.scheduled_sampling_peak_fraction
        )

    # ----------------------------------------------------------------------------------------
    # Helpers
    # ----------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.queries.device

    def check_video(self, video: torch.Tensor) -> None:
        """Raise ValueError unless ``video`` is a float (B, C, T, S, S) tensor in [0, 1]."""
        c = self.config
        expected = (c.in_channels, c.num_frames, c.image_size, c.image_size)
        contract = f"float (batch, {', '.join(map(str, expected))}) in [0, 1]"
        if not torch.is_tensor(video) or not video.is_floating_point():
            dtype = video.dtype if torch.is_tensor(video) else type(video).__name__
            raise ValueError(f"video must be a {contract} tensor, got dtype {dtype}; divide uint8 frames by 255")
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"video must be {contract}, got shape {tuple(video.shape)}; "
                "use larp_video.tokenize_video for videos of other lengths and sizes"
            )
        low, high = torch.aminmax(video.detach())
        if low < -1e-4 or high > 1 + 1e-4:
            raise ValueError(
                f"video must be {contract}, got values in [{float(low):.3f}, {float(high):.3f}]; "
                "inputs in [-1, 1] need (video + 1) / 2"
            )

    def num_parameters(self, include_prior: bool = True) -> int:
        return sum(
            p.numel() for name, p in self.named_parameters() if include_prior or not name.startswith("prior.")
        )

    @classmethod
    def _from_released(cls, released_config, state_dict, **overrides):
        from larp_video.models.released import load_released_tokenizer

        return load_released_tokenizer(released_config, state_dict, **overrides)
