"""Grids of generated videos: an animated GIF of tiled videos and a PNG of their frames."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from larp_video.visualize import frame_rows, save_frame_grid

GAP = 2


def tile_videos(videos: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Tile uint8 (T, H, W, 3) videos of one size into one (T, rows*H, columns*W, 3) video.

    Videos shorter than the longest hold their last frame; empty cells and the 2-pixel gaps
    between cells are white.
    """
    if not videos:
        raise ValueError("a video grid needs at least one video")
    columns = max(1, min(columns, len(videos)))
    rows = math.ceil(len(videos) / columns)
    length = max(video.shape[0] for video in videos)
    height, width = videos[0].shape[1:3]
    canvas = np.full(
        (length, rows * height + (rows - 1) * GAP, columns * width + (columns - 1) * GAP, 3), 255, dtype=np.uint8
    )
    for number, video in enumerate(videos):
        if video.shape[1:3] != (height, width):
            raise ValueError(f"all videos of a grid need one frame size; got {video.shape[1:3]} and {(height, width)}")
        top = (number // columns) * (height + GAP)
        left = (number % columns) * (width + GAP)
        held = np.concatenate([video, np.repeat(video[-1:], length - video.shape[0], axis=0)])  # (T, H, W, 3)
        canvas[:, top : top + height, left : left + width] = held
    return canvas


def save_gif(path: str | os.PathLike, video: np.ndarray, fps: float, scale: int = 1) -> Path:
    """Write a uint8 (T, H, W, 3) video as a looping animated GIF, enlarged ``scale`` times."""
    from PIL import Image

    frames = [Image.fromarray(np.ascontiguousarray(frame)) for frame in video]
    if scale > 1:
        frames = [frame.resize((frame.width * scale, frame.height * scale), Image.NEAREST) for frame in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path


def save_sample_grids(
    stem: str | os.PathLike,
    videos: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    columns: int = 8,
    fps: float = 8.0,
    frames_per_row: int = 8,
) -> tuple[Path, Path]:
    """Write ``STEM.gif`` (the videos tiled and animated) and ``STEM.png`` (one labelled row of
    evenly spaced frames per video). Returns both paths."""
    stem = Path(stem)
    height = videos[0].shape[1]
    scale = max(1, 128 // height)
    gif = save_gif(stem.with_suffix(".gif"), tile_videos(videos, columns), fps, scale=scale)
    png = save_frame_grid(stem.with_suffix(".png"), frame_rows(list(videos), frames_per_row), list(labels))
    return gif, png
