"""Datasets that read the clips of an evaluation protocol from video files.

Every clip comes out as float (3, T, S, S) in [0, 1]: frames resized so the short side is S
(bilinear, antialiased) and centre-cropped, the transform of the reference implementation's
evaluation data. Only the clips of one batch are in memory at a time; ``make_loader`` can
decode them in worker processes.

Dimension legend: T frames, S frame side, B clips.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from larp_video.data.datasets import VIDEO_EXTENSIONS
from larp_video.data.transforms import FrameGeometry, fit_frames_to_model, pad_frames, resize
from larp_video.data.video_errors import TooFewFramesError, VideoReadError
from larp_video.data.video_io import iter_video, probe_video, read_video
from larp_video.evaluation.chunks import ManifestEntry, PlannedChunk, clip_start


def fit_square(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames -> float (3, T, size, size): short side to ``size``, centre crop."""
    geometry = FrameGeometry.compute(frames.shape[1], frames.shape[2], size, "crop")
    return fit_frames_to_model(frames, geometry)  # the training datasets' resize, uint8 bilinear


def read_first_frames(path: str | os.PathLike, num_frames: int, start_frame: int = 0) -> np.ndarray:
    """Read frames [start_frame, start_frame + num_frames) as uint8 (T, H, W, 3), decoding no further.

    Raises ``TooFewFramesError`` when the video ends earlier.
    """
    chunk = next(iter_video(path, num_frames, start_frame=start_frame, max_frames=num_frames))
    if chunk.shape[0] < num_frames:
        raise TooFewFramesError(
            os.fspath(path),
            f"frames {start_frame} to {start_frame + num_frames - 1} were requested but the video ends after "
            f"frame {start_frame + chunk.shape[0] - 1}",
        )
    return chunk


class VideoItems(Dataset):
    """A dataset whose ``read(item)`` decodes a video file.

    A ``VideoReadError`` is returned as the item's ``error`` instead of raised, so that it
    reaches the main process intact from a DataLoader worker. ``ClipLoader`` raises it there.
    """

    def read(self, item: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, item: int) -> dict:
        try:
            return self.read(item)
        except VideoReadError as error:
            return {"error": error}


class ReconstructionClips(VideoItems):
    """One seeded clip per manifest video (see ``chunks.clip_start``), padded to ``num_frames``.

    Items: ``video`` (3, T, S, S), ``video_index`` (position in the sorted manifest),
    ``start_frame`` and ``frames_read`` (frames before padding).
    """

    def __init__(
        self, entries: Sequence[ManifestEntry], video_indices: Sequence[int], num_frames: int, size: int, seed: int
    ):
        self.entries = list(entries)
        self.video_indices = list(video_indices)
        self.num_frames = num_frames
        self.size = size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.video_indices)

    def read(self, item: int) -> dict:
        video_index = self.video_indices[item]
        path = self.entries[video_index].path
        info = probe_video(path)
        start = clip_start(self.seed, video_index, info.num_frames, self.num_frames)
        count = min(self.num_frames, info.num_frames - start)
        frames, _ = read_video(path, start, count, info=info)
        clip = pad_frames(fit_square(frames, self.size), self.num_frames)
        return {"video": clip.contiguous(), "video_index": video_index, "start_frame": start, "frames_read": count}


class ChunkClips(VideoItems):
    """The real chunks of a plan, fitted to ``clip_size`` and then resized to ``output_size``.

    The two steps follow the reference implementation's frame-prediction protocol, which crops
    the real chunk at the tokenizer's resolution and resizes the result to 64 x 64. The resize
    is bilinear and antialiased. Items: ``video`` (3, T, output_size, output_size), ``sample``.
    """

    def __init__(self, chunks: Sequence[PlannedChunk], clip_size: int, output_size: int | None = None):
        self.chunks = list(chunks)
        self.clip_size = clip_size
        self.output_size = output_size or clip_size

    def __len__(self) -> int:
        return len(self.chunks)

    def read(self, item: int) -> dict:
        chunk = self.chunks[item]
        frames = read_first_frames(chunk.path, chunk.num_frames, chunk.start_frame)
        clip = fit_square(frames, self.clip_size)
        if self.output_size != self.clip_size:
            clip = resize(clip, self.output_size, self.output_size).clamp_(0.0, 1.0)
        return {"video": clip.contiguous(), "sample": chunk.sample}


class SampleClips(VideoItems):
    """The first ``num_frames`` frames of each generated video, fitted to ``size``.

    Items: ``video`` (3, T, size, size), ``file_index`` (position in ``paths``).
    Raises ``TooFewFramesError`` naming the file when a video is shorter than ``num_frames``.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], file_indices: Sequence[int], num_frames: int, size: int):
        self.paths = [Path(path) for path in paths]
        self.file_indices = list(file_indices)
        self.num_frames = num_frames
        self.size = size

    def __len__(self) -> int:
        return len(self.file_indices)

    def read(self, item: int) -> dict:
        index = self.file_indices[item]
        try:
            frames = read_first_frames(self.paths[index], self.num_frames)
        except TooFewFramesError as error:
            raise TooFewFramesError(
                error.path,
                f"the generated video is shorter than the {self.num_frames} frames that the protocol compares "
                f"({error.reason}); generate clips of at least {self.num_frames} frames",
            ) from error
        return {"video": fit_square(frames, self.size).contiguous(), "file_index": index}


class FrameCounts(VideoItems):
    """Decoded frame count of each video, for enumerating chunks. Items: ``index``, ``frames``."""

    def __init__(self, paths: Sequence[str | os.PathLike], indices: Sequence[int]):
        self.paths = list(paths)
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, item: int) -> dict:
        index = self.indices[item]
        return {"index": index, "frames": probe_video(self.paths[index]).num_frames}


def collate_clips(items: list[dict]) -> dict:
    """Stack the ``video`` tensors into (B, 3, T, S, S) and list every other field.

    A batch with a failed item becomes ``{"error": the first error}``.
    """
    for item in items:
        if "error" in item:
            return {"error": item["error"]}
    batch: dict = {key: [item[key] for item in items] for key in items[0]}
    if "video" in batch:
        batch["video"] = torch.stack(batch["video"])
    return batch


class ClipLoader:
    """In-order batches of a ``VideoItems`` dataset, decoded in ``workers`` processes.

    Iterating raises the ``VideoReadError`` of the first unreadable video, with its own type
    and message, also when it happened in a worker. Workers are spawned, not forked: a worker
    forked from a process that had already encoded and decoded videos with PyAV (as
    ``--write-real-clips`` does) crashed with a segmentation fault.
    """

    def __init__(self, dataset: VideoItems, batch_size: int, workers: int = 0):
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate_clips,
            multiprocessing_context="spawn" if workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            if "error" in batch:
                raise batch["error"]
            yield batch


def make_loader(dataset: VideoItems, batch_size: int, workers: int = 0) -> ClipLoader:
    """Return a ``ClipLoader`` over ``dataset``."""
    return ClipLoader(dataset, batch_size, workers)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_sample_files(folder: str | os.PathLike) -> list[Path]:
    """Return the video files under ``folder`` (recursively) in natural order (2.mp4 before 10.mp4)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"samples folder {folder} not found; pass the folder that contains the generated videos"
        )
    files = [path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS]
    if not files:
        raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) found under {folder}")
    return sorted(files, key=lambda path: (_natural_key(path.relative_to(folder).parent), _natural_key(path)))
