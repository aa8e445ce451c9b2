"""Datasets of video clips for tokenizer training and evaluation.

Sources (folders, ``.txt`` lists, ``id,path,action,label`` CSV manifests) are resolved by
``larp_video.data.manifests``; its functions are re-exported here.
"""

from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Sampler

from larp_video.data.manifests import VIDEO_EXTENSIONS, list_labeled_videos, list_videos, read_manifest
from larp_video.data.transforms import FrameGeometry, fit_frames_to_model, pad_frames
from larp_video.data.video_errors import VideoReadError

__all__ = [
    "SKIPPED_SEPARATOR",
    "EpochSampler",
    "VIDEO_EXTENSIONS",
    "VideoClipDataset",
    "list_labeled_videos",
    "list_videos",
    "parse_skipped",
    "read_manifest",
]

logger = logging.getLogger(__name__)

# Items list the files skipped while loading them in one string, one "path<TAB>reason" per
# line, because the default collate function batches strings but not lists of varying length.
SKIPPED_SEPARATOR = "\t"


class VideoClipDataset(Dataset):
    """One clip of ``num_frames`` consecutive frames per video and item, as float
    (3, T, S, S) in [0, 1].

    Training mode (``random_clips``) picks a uniformly random start at the native frame rate
    and flips horizontally with probability 0.5 when ``flip``; otherwise the clip starts at a
    position drawn from ``seed`` and the item number, so evaluation gets the same clips every
    run and the repeats of one video start at different places. Clips shorter than ``num_frames`` are padded by repeating the last frame. Frames are
    resized so the short side equals ``image_size`` (antialiased) and centre-cropped.
    ``repeats`` lists every video that many times per epoch.

    A file that cannot be decoded (any ``VideoReadError``) is skipped: the item is loaded from
    another video, drawn at random, and the item's ``skipped`` string names the file and the
    reason. Each worker remembers the files that failed and does not open them again. After
    ``max_skips`` failures in a row the item raises ``RuntimeError``, since then most files are
    unreadable.

    Each video's ``VideoInfo`` (frame count and timestamps, from one decoding pass) is cached
    per worker, up to ``info_cache_size`` videos, so later clips seek instead of decoding the
    whole file.

    Items are dicts with ``video``, ``index`` (of the video used), ``label`` (-1 when unknown)
    and ``skipped``.
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
        max_skips: int = 50,
        info_cache_size: int = 16384,
    ):
        if not videos:
            raise ValueError("a video dataset needs at least one video")
        if labels is not None and len(labels) != len(videos):
            raise ValueError(f"got {len(labels)} labels for {len(videos)} videos")
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.videos = [str(v) for v in videos]
        self.labels = list(labels) if labels is not None else [-1] * len(self.videos)
        self.num_frames = num_frames
        self.image_size = image_size
        self.random_clips = random_clips
        self.flip = flip and random_clips
        self.repeats = repeats
        self.seed = seed
        self.max_skips = max_skips
        self.info_cache_size = info_cache_size
        self._infos: OrderedDict[int, object] = OrderedDict()
        self._unreadable: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.videos) * self.repeats

    def video_info(self, index: int):
        """Return the cached ``VideoInfo`` of video ``index``, probing it on first use."""
        from larp_video.data.video_io import probe_video

        info = self._infos.get(index)
        if info is None:
            info = probe_video(self.videos[index])
            self._infos[index] = info
            if len(self._infos) > self.info_cache_size:
                self._infos.popitem(last=False)
        else:
            self._infos.move_to_end(index)
        return info

    def frame_count(self, index: int) -> int:
        return self.video_info(index).num_frames

    def load_clip(self, index: int, rng: random.Random) -> torch.Tensor:
        from larp_video.data.video_io import read_video

        info = self.video_info(index)
        total = info.num_frames
        start = rng.randint(0, max(0, total - self.num_frames))
        frames, _ = read_video(self.videos[index], start, min(self.num_frames, total - start), info=info)
        geometry = FrameGeometry.compute(frames.shape[1], frames.shape[2], self.image_size, "crop")
        clip = pad_frames(fit_frames_to_model(frames, geometry), self.num_frames)  # (3, T, S, S)
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
        return clip.contiguous()

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Load item ``key``: an int, or (item, seed) from ``EpochSampler``, whose seed then
        drives the clip's start and flip instead of the global random state."""
        item, item_seed = key if isinstance(key, tuple) else (key, None)
        index = item % len(self.videos)
        if not self.random_clips:
            rng = random.Random(self.seed * 1_000_003 + item)
        elif item_seed is not None:
            rng = random.Random(item_seed)
        else:
            rng = random.Random(torch.randint(0, 2**62, ()).item())

        skipped = []
        while True:
            reason = self._unreadable.get(index)
            if reason is None:
                try:
                    clip = self.load_clip(index, rng)
                    break
                except VideoReadError as error:
                    reason = error.reason
                    self._unreadable[index] = reason
                    self._infos.pop(index, None)
            skipped.append(f"{self.videos[index]}{SKIPPED_SEPARATOR}{reason}")
            if len(skipped) > self.max_skips:
                raise RuntimeError(
                    f"{len(skipped)} videos in a row could not be read (the last: {self.videos[index]}: "
                    f"{reason}); check the dataset paths and files"
                )
            index = self._replacement_index(rng, index)

        return {"video": clip, "index": index, "label": self.labels[index], "skipped": "\n".join(skipped)}


    def _replacement_index(self, rng: random.Random, failed: int) -> int:
        """Draw a video that this worker has not found unreadable."""
        for _ in range(100):
            candidate = rng.randrange(len(self.videos))
            if candidate not in self._unreadable:
                return candidate
        readable = [index for index in range(len(self.videos)) if index not in self._unreadable]
        if not readable:
            raise RuntimeError(
                f"none of the {len(self.videos)} videos could be read (the last: {self.videos[failed]}: "
                f"{self._unreadable[failed]}); check the dataset paths and files"
            )
        return rng.choice(readable)


class EpochSampler(Sampler):
    """Yields (item, seed) pairs whose order and seeds depend only on ``seed`` and the epoch.

    Lightning calls ``set_epoch`` at the start of every epoch (also through its distributed
    sampler wrapper), so an epoch draws the same clips whether or not the run was interrupted,
    however many workers load them and whether they persist. Under DDP the wrapper deals the
    pairs out to the ranks in turn.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, with_seeds: bool = True):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.with_seeds = with_seeds  # False: yield the items alone, for datasets without randomness
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator) if self.shuffle else torch.arange(self.num_items)
        if not self.with_seeds:
            return iter(order.tolist())
        seeds = torch.randint(0, 2**62, (self.num_items,), generator=generator)
        return iter(zip(order.tolist(), seeds.tolist()))


def parse_skipped(entries: Sequence[str]) -> list[tuple[str, str]]:
    """Split a batch's ``skipped`` strings into (path, reason) pairs."""
    pairs = []
    for entry in entries:
        for line in entry.splitlines():
            path, _, reason = line.partition(SKIPPED_SEPARATOR)
            pairs.append((path, reason))
    return pairs
