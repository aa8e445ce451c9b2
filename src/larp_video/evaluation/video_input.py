"""The video input contract of the metric networks: layout, dtype and value range.

Dimension legend: B videos, T frames, C channels (3, RGB), H height, W width.
"""

from __future__ import annotations

import torch

LAYOUTS = ("auto", "BCTHW", "BTHWC")
VIDEO_CONTRACT = (
    "videos must be (B, T, H, W, 3) or (B, 3, T, H, W), either uint8 in [0, 255] or floating point in [0, 1]"
)


def to_channels_first(videos: torch.Tensor, layout: str = "auto") -> torch.Tensor:
    """Return ``videos`` as (B, 3, T, H, W), keeping its dtype.

    ``layout="auto"`` takes the axis of size 3 as the channel axis and raises when both axis 1
    and the last axis have size 3; pass ``layout="BCTHW"`` or ``"BTHWC"`` for such shapes.
    """
    if not isinstance(videos, torch.Tensor):
        raise TypeError(f"{VIDEO_CONTRACT}; got {type(videos).__name__}, convert it with torch.as_tensor")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if videos.ndim != 5:
        raise ValueError(f"{VIDEO_CONTRACT}; got shape {tuple(videos.shape)} with {videos.ndim} dimensions")

    if layout == "auto":
        first, last = videos.shape[1] == 3, videos.shape[-1] == 3
        if first and last:
            raise ValueError(
                f"cannot tell the channel axis of shape {tuple(videos.shape)}: axis 1 and the last axis both "
                "have size 3; pass layout='BCTHW' or layout='BTHWC'"
            )
        if not first and not last:
            raise ValueError(f"{VIDEO_CONTRACT}; got shape {tuple(videos.shape)} with no axis of size 3")
        layout = "BCTHW" if first else "BTHWC"

    if layout == "BTHWC":
        videos = videos.permute(0, 4, 1, 2, 3)  # (B, T, H, W, C) -> (B, C, T, H, W)
    if videos.shape[1] != 3:
        raise ValueError(f"{VIDEO_CONTRACT}; got {videos.shape[1]} channels in layout {layout}")
    return videos


def check_value_range(videos: torch.Tensor) -> None:
    """Raise unless ``videos`` is uint8, or floating point with all values in [0, 1]."""
    if videos.dtype == torch.uint8:
        return
    if not videos.is_floating_point():
        raise TypeError(f"{VIDEO_CONTRACT}; got dtype {videos.dtype}")
    if videos.numel() == 0:
        return

    low, high = torch.aminmax(videos.detach())
    if torch.isnan(low) or torch.isnan(high):
        raise ValueError(f"{VIDEO_CONTRACT}; got NaN values")
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{VIDEO_CONTRACT}; got float values in [{low.item():.4g}, {high.item():.4g}]. "
            "Map [-1, 1] videos with (x + 1) / 2, divide 0..255 floats by 255, or clamp decoder outputs to [0, 1]"
        )


def to_unit_float(videos: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a checked uint8 or [0, 1] float tensor to floating point in [0, 1]."""
    if videos.dtype == torch.uint8:
        return videos.to(dtype) / 255.0
    return videos.to(dtype)
