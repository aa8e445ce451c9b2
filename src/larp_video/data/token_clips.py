"""Which clips of a video are tokenized, and a stream that reads them for ``tokenize_dataset``.

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

from torch.utils.data import IterableDataset, get_worker_info

from larp_video.data.transforms import FrameGeometry, fit_to_model, frames_to_tensor, pad_frames
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
        from larp_video.data.video_io import iter_video, probe_video, read_video

        if self.mode == "chunks":
            # One decoding pass; the last, shorter chunk is not a clip.
            chunks = iter_video(path, self.clip_frames)
            for number, frames in enumerate(chunks):
                if frames.shape[0] < self.clip_frames:
                    break
                yield self.clip_item(video_index, number, number * self.clip_frames, frames)
            return

        info = probe_video(path)
        starts = clip_starts(self.mode, info.num_frames, self.clip_frames, self.clips_per_video, self.seed, video_index)
        for number, start in enumerate(starts):
            count = min(self.clip_frames, info.num_frames - start)
            frames, _ = read_video(path, start, count, info=info)
            yield self.clip_item(video_index, number, start, frames)

    def clip_item(self, video_index: int, number: int, start: int, frames) -> dict[str, Any]:
        video = frames_to_tensor(frames)  # (3, t, H, W)
        geometry = FrameGeometry.compute(video.shape[2], video.shape[3], self.image_size, self.fit)
        clip = pad_frames(fit_to_model(video, geometry), self.clip_frames)  # (3, T, S, S)
        return {"video_index": video_index, "clip_number": number, "start_frame": start, "clip": clip.contiguous()}
