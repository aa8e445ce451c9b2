"""Clip selection for token extraction, and the stream that reads the clips for ``tokenize_dataset``.

Clips are chosen per video by a pure function of the frame count, the video's position in the
sorted manifest and the seed:

- ``chunks``: every non-overlapping clip ``[i * T, (i + 1) * T)`` with ``i < frames // T``,
  the enumeration of the reference implementation's gFVD protocol (``evaluation.chunks``).
  Videos shorter than one clip contribute none.
- ``random``: ``clips_per_video`` starts drawn uniformly from ``[0, frames - T]`` with
  ``random.Random(seed * 1_000_003 + video_index)``. A video shorter than T frames gives
  clips from frame 0 padded by repeating its last frame, as in tokenizer training.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from larp_video.data.transforms import FrameGeometry, fit_frames_to_model, pad_frames
from larp_video.data.video_errors import VideoReadError
from larp_video.evaluation.chunks import enumerate_chunks

CLIP_MODES = ("chunks", "random")
# Multiplier that spreads per-video seeds apart, as in VideoClipDataset and evaluation.chunks.
_VIDEO_SEED_STRIDE = 1_000_003


def clip_starts(mode: str, total_frames: int, clip_frames: int, clips_per_video: int, seed: int, video_index: int) -> list[int]:
    """Return the start frames of a video's clips under ``mode`` (see the module docstring)."""
    if mode == "chunks":
        return [start for _, start in enumerate_chunks([total_frames], clip_frames)]
    if mode != "random":
        raise ValueError(f"mode must be one of {CLIP_MODES}, got {mode!r}")
    rng = random.Random(seed * _VIDEO_SEED_STRIDE + video_index)
    return [rng.randint(0, max(0, total_frames - clip_frames)) for _ in range(clips_per_video)]


class VideoClipStream(IterableDataset):
    """Stream the fitted clips of a list of videos, each video closed by a ``done`` item.

    Clip items: ``video_index``, ``clip_number``, ``start_frame`` and ``clip`` (3, T, S, S) in
    [0, 1]. Done items: ``video_index``, ``done`` True, ``error`` (None, or the message of the
    ``VideoReadError`` that made the video unusable; its clips must then be dropped). In a
    DataLoader with workers, worker ``w`` of ``W`` reads the videos at positions ``w, w + W, ...``.
    """

    def __init__(
        self,
        videos: Sequence[tuple[int, str]],
        clip_frames: int,
        image_size: int,
        *,
        fit: str = "crop",
        mode: str = "random",
        clips_per_video: int = 1,
        seed: int = 0,
    ):
        self.videos = list(videos)
        self.clip_frames = clip_frames
        self.image_size = image_size
        self.fit = fit
        self.mode = mode
        self.clips_per_video = clips_per_video
        self.seed = seed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        videos = self.videos if worker is None else self.videos[worker.id :: worker.num_workers]
        for video_index, path in videos:
            try:
                yield from self.video_clips(video_index, path)
            except VideoReadError as error:
                yield {"video_index": video_index, "done": True, "error": str(error)}
                continue
            yield {"video_index": video_index, "done": True, "error": None}

    def video_clips(self, video_index: int, path: str) -> Iterator[dict[str, Any]]:
        from larp_video.data.video_io import iter_video, probe_video

        if self.mode == "chunks":
            # One decoding pass; the last, shorter chunk is not a clip.
            for number, frames in enumerate(iter_video(path, self.clip_frames)):
                if frames.shape[0] < self.clip_frames:
                    break
                clip = self.fit_frames(frames)  # (3, T, S, S)
                yield self.clip_item(video_index, number, number * self.clip_frames, clip)
            return

        info = probe_video(path)
        starts = clip_starts(self.mode, info.num_frames, self.clip_frames, self.clips_per_video, self.seed, video_index)
        numbers: dict[int, list[int]] = {}
        for number, start in enumerate(starts):
            numbers.setdefault(start, []).append(number)
        pending = sorted(numbers)

        # One decoding pass from the first start to the last clip's end. Frames are fitted once
        # and kept from the earliest start not yet served, so overlapping clips share them.
        stop = min(info.num_frames, pending[-1] + self.clip_frames)
        chunks = iter_video(path, self.clip_frames, start_frame=pending[0], max_frames=stop - pending[0], info=info)
        buffer_start, buffer = pending[0], None  # buffer: (3, t, S, S) fitted frames from buffer_start
        for frames in chunks:
            fitted = self.fit_frames(frames)
            buffer = fitted if buffer is None else torch.cat([buffer, fitted], dim=1)
            while pending and pending[0] + self.clip_frames <= buffer_start + buffer.shape[1]:
                start = pending.pop(0)
                offset = start - buffer_start
                clip = buffer[:, offset : offset + self.clip_frames]
                for number in numbers[start]:
                    yield self.clip_item(video_index, number, start, clip)
            if not pending:
                return
            # Drop the frames before the next start; all of them when it lies beyond the buffer.
            drop = min(pending[0] - buffer_start, buffer.shape[1])
            buffer, buffer_start = buffer[:, drop:], buffer_start + drop

        # Only a video shorter than one clip gets here: its clips are padded.
        for start in pending:
            clip = pad_frames(buffer[:, start - buffer_start :], self.clip_frames)
            for number in numbers[start]:
                yield self.clip_item(video_index, number, start, clip)

    def fit_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Fit uint8 (t, H, W, 3) frames to the model's frame: float (3, t, S, S) in [0, 1]."""
        geometry = FrameGeometry.compute(frames.shape[1], frames.shape[2], self.image_size, self.fit)
        return fit_frames_to_model(frames, geometry)  # the training datasets' resize

    @staticmethod
    def clip_item(video_index: int, number: int, start: int, clip: torch.Tensor) -> dict[str, Any]:
        return {"video_index": video_index, "clip_number": number, "start_frame": start, "clip": clip.contiguous()}
