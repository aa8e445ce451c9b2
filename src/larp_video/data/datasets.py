"""Datasets of video clips for tokenizer training and evaluation.

Sources are plain folders (searched recursively for video files), text files with one path
per line, and CSV manifests in the reference format ``id,path,action,label`` (paths relative
to the manifest's folder unless absolute).
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from larp_video.data.transforms import FrameGeometry, fit_to_model, frames_to_tensor, pad_frames

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".m4v", ".flv", ".wmv", ".ts"}


def list_videos(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Resolve a folder, a list file, a CSV manifest, or a list of these into video paths."""
    if isinstance(source, (list, tuple)):
        paths = []
        for item in source:
            paths.extend(list_videos(item))
        return paths

    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not paths:
            raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) found under {source}")
        return paths
    if not source.is_file():
        raise FileNotFoundError(f"video source {source} not found; pass a folder, a .csv manifest or a .txt list")
    if source.suffix.lower() == ".csv":
        return [path for path, _ in read_manifest(source)]
    if source.suffix.lower() == ".txt":
        lines = [line.strip() for line in source.read_text().splitlines()]
        return [_resolve(source.parent, line) for line in lines if line and not line.startswith("#")]
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        return [source]
    raise ValueError(f"cannot tell what {source} lists; use a folder, a .csv manifest, a .txt list or a video file")


def read_manifest(path: str | os.PathLike) -> list[tuple[Path, int]]:
    """Read an ``id,path,action,label`` CSV manifest into (path, label) pairs."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"manifest {path} has no 'path' column; expected the header id,path,action,label")
        rows = []
        for row in reader:
            label = int(row["label"]) if row.get("label") not in (None, "") else -1
            rows.append((_resolve(path.parent, row["path"]), label))
    return rows


def _resolve(base: Path, entry: str) -> Path:
    candidate = Path(entry).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


class VideoClipDataset(Dataset):
    """One clip of ``num_frames`` consecutive frames per video and item, as float
    (3, T, S, S) in [0, 1].

    Training mode (``random_clips``) picks a uniformly random start at the native frame rate
    and flips horizontally with probability 0.5 when ``flip``; otherwise the clip starts at a
    start drawn from ``seed`` and the item index, so evaluation sees the same clips every run.
    Clips shorter than ``num_frames`` are padded by repeating the last frame. Frames are
    resized so the short side equals ``image_size`` (antialiased) and centre-cropped.
    ``repeats`` lists every video that many times per epoch.

    Items are dicts with ``video``, ``index`` (of the video) and ``label`` (-1 when unknown).
    """

    def __init__(
        self,
        videos: Sequence[str | os.PathLike],
        num_frames: int,
        image_size: int,
        *,
        random_clips: bool = True,
        flip: bool = True,
        repeats: int = 1,
        seed: int = 0,
        labels: Sequence[int] | None = None,
    ):
        if not videos:
            raise ValueError("a video dataset needs at least one video")
        self.videos = [str(v) for v in videos]
        self.labels = list(labels) if labels is not None else [-1] * len(self.videos)
        self.num_frames = num_frames
        self.image_size = image_size
        self.random_clips = random_clips
        self.flip = flip and random_clips
        self.repeats = repeats
        self.seed = seed
        self._frame_counts: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.videos) * self.repeats

    def frame_count(self, index: int) -> int:
        from larp_video.data.video_io import probe_video

        if index not in self._frame_counts:
            self._frame_counts[index] = probe_video(self.videos[index]).num_frames
        return self._frame_counts[index]

    def load_clip(self, index: int, rng: random.Random) -> torch.Tensor:
        from larp_video.data.video_io import read_video

        total = self.frame_count(index)
        start = rng.randint(0, max(0, total - self.num_frames))
        frames, _ = read_video(self.videos[index], start, min(self.num_frames, total - start))
        clip = frames_to_tensor(frames)  # (3, t, H, W)
        geometry = FrameGeometry.compute(clip.shape[2], clip.shape[3], self.image_size, "crop")
        clip = pad_frames(fit_to_model(clip, geometry), self.num_frames)
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return clip.contiguous()

    def __getitem__(self, item: int) -> dict:
        index = item % len(self.videos)
        if self.random_clips:
            rng = random.Random(torch.randint(0, 2**62, ()).item())
        else:
            rng = random.Random(self.seed * 1_000_003 + index)
        return {"video": self.load_clip(index, rng), "index": index, "label": self.labels[index]}
