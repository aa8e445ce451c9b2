"""Pictures for people: frame grids of originals next to reconstructions or samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LABEL_WIDTH = 110
MIN_TILE_HEIGHT = 128
GAP = 4


def save_frame_grid(
    path: str | os.PathLike,
    rows: Sequence[Sequence[np.ndarray]],
    labels: Sequence[str],
) -> Path:
    """Write a PNG with one labelled row per frame sequence.

    Each row is a list of uint8 (H, W, 3) frames of one size. Small frames are enlarged by an
    integer factor (nearest neighbour) to at least 128 pixels high.
    """
    from PIL import Image, ImageDraw

    if len(rows) != len(labels):
        raise ValueError(f"got {len(rows)} rows but {len(labels)} labels")
    if not rows or not rows[0]:
        raise ValueError("a frame grid needs at least one frame")
    height, width = rows[0][0].shape[:2]
    factor = max(1, -(-MIN_TILE_HEIGHT // height))
    tile_height, tile_width = height * factor, width * factor
    columns = max(len(row) for row in rows)

    canvas = Image.new(
        "RGB",
        (LABEL_WIDTH + columns * (tile_width + GAP), len(rows) * (tile_height + GAP)),
        color=(255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    for row_index, (row, label) in enumerate(zip(rows, labels)):
        top = row_index * (tile_height + GAP)
        draw.text((6, top + tile_height // 2 - 6), label, fill=(0, 0, 0))
        for column, frame in enumerate(row):
            tile = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_width, tile_height), Image.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + column * (tile_width + GAP), top))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def frame_rows(videos: Sequence[np.ndarray], num_frames: int = 8) -> list[list[np.ndarray]]:
    """Pick ``num_frames`` evenly spaced frames from each uint8 (T, H, W, 3) video."""
    rows = []
    for video in videos:
        indices = np.linspace(0, video.shape[0] - 1, min(num_frames, video.shape[0])).round().astype(int)
        rows.append([video[i] for i in indices])
    return rows
