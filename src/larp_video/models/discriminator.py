"""Transformer video discriminator for the adversarial part of tokenizer training.

The architecture, its defaults and its initialisation follow the discriminator of the reference
implementation (hywang66/LARP, ``TransformerDiscriminator`` with the sizes set by its tokenizer
training scripts). Its parameter names are ours.

Dimension legend used in shape comments:
    B  batch          C  channels (3)      T  frames          H, W  height, width
    N  patch tokens   D  width
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from larp_video.config import Config
from larp_video.models.layers import Block, sincos_3d, xavier_init_linears


@dataclasses.dataclass
class DiscriminatorConfig(Config):
    """Sizes of a ``VideoDiscriminator``. ``num_frames`` and ``image_size`` must match the
    clips the tokenizer is trained on."""

    # Clip length in frames. 16 is the reference tokenizer's clip.
    num_frames: int = 16
    # Height and width of the square input frames. 128 is the reference tokenizer's clip.
    image_size: int = 128
    # Input channels (RGB).
    in_channels: int = 3
    # Frames per patch, the temporal kernel and stride of the patch embedding (reference: 4).
    temporal_patch_size: int = 4
    # Pixels per patch side, the spatial kernel and stride of the patch embedding (reference: 8).
    patch_size: int = 8
    # Token width (reference training scripts: 512).
    dim: int = 512
    # Number of transformer blocks (reference training scripts: 12).
    depth: int = 12
    # Attention heads per block (reference training scripts: 8).
    num_heads: int = 8
    # MLP hidden width as a multiple of ``dim`` (reference: 4, the timm ViT block default).
    mlp_ratio: float = 4.0
    # Epsilon of the LayerNorm before the output head (reference: 1e-6, as in the blocks).
    final_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.num_frames % self.temporal_patch_size != 0:
            raise ValueError(
                f"num_frames={self.num_frames} is not divisible by temporal_patch_size="
                f"{self.temporal_patch_size}; choose a clip length that is a multiple of it"
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                "choose a frame size that is a multiple of it"
            )
        if self.dim % self.num_heads != 0:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.dim % 4 != 0:
            raise ValueError(
                f"dim={self.dim} must be a multiple of 4 for the 3D sin-cos position table"
            )

    @classmethod
    def reference(cls) -> DiscriminatorConfig:
        """Return the sizes of the reference tokenizer training (38,205,953 parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> DiscriminatorConfig:
        """Return sizes for tests: about 50k parameters on 8 x 32 x 32 clips."""
        return cls(num_frames=8, image_size=32, dim=32, depth=2, num_heads=2)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Patch grid (T / pt, H / p, W / p)."""
        side = self.image_size // self.patch_size
        return (self.num_frames // self.temporal_patch_size, side, side)

    @property
    def num_patches(self) -> int:
        return math.prod(self.grid_size)


class VideoDiscriminator(nn.Module):
    """ViT over 3D patches that returns one real/fake logit per clip.

    Input: video (B, 3, T, H, W), the clips the tokenizer encodes. The reference feeds its discriminator
    the dataset clips in [0, 1] (uint8 / 255, no mean/std and no mapping to [-1, 1]) and the
    decoder outputs unclamped, so values outside [0, 1] are accepted and passed through as they
    are. Output: logits (B,) in the input's compute dtype.

    Steps: Conv3d patch embedding (kernel = stride = patch size) plus a fixed 3D sin-cos table,
    a learned class token in front, pre-norm ViT blocks, then LayerNorm and Linear -> 1 on the
    class token.
    """

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else DiscriminatorConfig()
        patch = (config.temporal_patch_size, config.patch_size, config.patch_size)
        grid_t, grid_side, _ = config.grid_size

        self.patch_embed = nn.Conv3d(config.in_channels, config.dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.dim))
        # Fixed table in (t, row, column) order, the order of the flattened Conv3d output. It is
        # rebuilt at construction, so it stays out of the state dict.
        self.register_buffer(
            "pos_embed", sincos_3d(config.dim, grid_side, grid_t).unsqueeze(0), persistent=False
        )  # (1, N, D)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.num_heads, mlp_ratio=config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.final_norm_eps)
        self.head = nn.Linear(config.dim, 1)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the weights as the reference does.

        Every Linear is Xavier-uniform with zero bias. The patch embedding is Xavier-uniform as
        if it were the Linear (D, C * pt * p * p), with zero bias. The class token is
        Xavier-uniform on its (1, 1, D) shape, which is U(-sqrt(3 / D), sqrt(3 / D)).
        LayerNorms are weight 1, bias 0.
        """
        xavier_init_linears(self)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()

        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)

        nn.init.xavier_uniform_(self.cls_token)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        self._check_input(video)
        batch = video.shape[0]

        tokens = self.patch_embed(video)  # (B, D, T/pt, H/p, W/p)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = tokens + self.pos_embed.to(tokens.dtype)

        cls = self.cls_token.expand(batch, -1, -1).to(tokens.dtype)  # (B, 1, D)
        x = torch.cat([cls, tokens], dim=1)  # (B, 1 + N, D)
        for block in self.blocks[:-1]:
            x = block(x)
        x = self.blocks[-1](x, keep=slice(0, 1))  # only the class token leaves the last block

        x = self.norm(x[:, 0])  # (B, D)
        # A copy, not a view: FSDP2 attaches its backward hook to the output and warns on views.
        return self.head(x).squeeze(-1).clone()  # (B,)

    def _check_input(self, video: torch.Tensor) -> None:
        config = self.config
        expected = (config.in_channels, config.num_frames, config.image_size, config.image_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"VideoDiscriminator expects video of shape (B, {', '.join(map(str, expected))}) "
                f"as (B, C, T, H, W), got {tuple(video.shape)}; resize or crop the clips, or build "
                "the discriminator with matching num_frames and image_size"
            )
        if not video.is_floating_point():
            raise ValueError(
                f"VideoDiscriminator expects a float video in [0, 1], got dtype {video.dtype}; "
                "convert uint8 frames with video.float() / 255"
            )
