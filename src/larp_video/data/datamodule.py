"""Lightning data module over video files for tokenizer training."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader

from larp_video.data.datasets import EpochSampler, VideoClipDataset
from larp_video.data.manifests import list_labeled_videos
from larp_video.data.resumable_loader import ResumableDataLoader, batches_done_in_epoch, fingerprint_data, loader_generator

logger = logging.getLogger(__name__)


class VideoDataModule(L.LightningDataModule):
    """Random training clips and fixed validation clips from folders, lists or manifests.

    Training items come from an ``EpochSampler``: the clips of an epoch depend only on ``seed``
    and the epoch number, so a resumed run gets the clips an uninterrupted run would. Under DDP,
    Lightning wraps both loaders' samplers so each rank reads a different part of every epoch,
    and ``batch_size`` is the batch of one process.

    Args:
        train: folder, ``.txt`` list, ``.csv`` manifest (``id,path,action,label``) or a list of them,
            joined in order.
        val: the same for validation; None skips validation.
        root: folder that relative paths in lists and manifests are resolved against; by default
            each list's own folder. The reference UCF-101 and Kinetics-600 manifests need the
            folder that contains their ``data/`` directory.
        num_frames: frames per clip; must equal the tokenizer's clip length.
        image_size: clip side after short-side resize and centre crop; must equal the tokenizer's.
        batch_size: clips per step and process.
        val_batch_size: clips per validation step and process; defaults to ``batch_size``.
        num_workers: data loader worker processes per training process.
        flip: random horizontal flips in training.
        repeats: random clips drawn from each training video per epoch.
        val_repeats: fixed validation clips per validation video, each from its own start. With
            few validation videos, more clips make the validation metrics less noisy.
        seed: seed of the fixed validation clips (and of the training clips when ``deterministic``).
        deterministic: training clips are fixed like validation clips (start drawn from ``seed``
            and the video index, no flips, no shuffling), for reproducibility checks.
        max_skips: unreadable files skipped in a row before an item raises.
        persistent_workers: keep worker processes (and their per-video caches) between epochs.
        pin_memory: page-locked batches for faster copies to the GPU; None pins when CUDA is available.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        root: str | None = None,
        num_frames: int = 16,
        image_size: int = 128,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        flip: bool = True,
        repeats: int = 1,
        val_repeats: int = 1,
        seed: int = 0,
        deterministic: bool = False,
        max_skips: int = 50,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
    ):
        super().__init__()
        for name, value in (("repeats", repeats), ("val_repeats", val_repeats)):
            if value < 1:
                raise ValueError(f"data.{name} must be at least 1, got {value}")
        self.save_hyperparameters()
        self.train_dataset: VideoClipDataset | None = None
        self.val_dataset: VideoClipDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if self.train_dataset is None:
            self.train_dataset = self._dataset(h.train, random_clips=not h.deterministic, repeats=h.repeats)
            logger.info("training on %d videos", len(self.train_dataset.videos))
        if h.val is not None and self.val_dataset is None:
            self.val_dataset = self._dataset(h.val, random_clips=False, repeats=h.val_repeats)

    def _dataset(self, source, *, random_clips: bool, repeats: int) -> VideoClipDataset:
        h = self.hparams
        pairs = list_labeled_videos(source, h.root)
        return VideoClipDataset(
            [path for path, _ in pairs],
            h.num_frames,
            h.image_size,
            random_clips=random_clips,
            flip=h.flip,
            repeats=repeats,
            seed=h.seed,
            labels=[label for _, label in pairs],
            max_skips=h.max_skips,
        )

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        sampler = EpochSampler(len(self.train_dataset), seed=h.seed, shuffle=not h.deterministic)
        return ResumableDataLoader(
            self.train_dataset,
            batches_done=self._batches_done,
            data_key=fingerprint_data(self.train_dataset.videos, h.repeats, h.seed, h.deterministic),
            batch_size=h.batch_size,
            sampler=sampler,
            drop_last=len(self.train_dataset) >= h.batch_size,
            num_workers=h.num_workers,
            persistent_workers=h.persistent_workers and h.num_workers > 0,
            pin_memory=torch.cuda.is_available() if h.pin_memory is None else h.pin_memory,
            generator=loader_generator(h.seed),
        )

    def _batches_done(self) -> int:
        return batches_done_in_epoch(self.trainer)

    def val_dataloader(self) -> DataLoader | list:
        h = self.hparams
        if self.val_dataset is None:
            return []
        return DataLoader(
            self.val_dataset,
            batch_size=h.val_batch_size or h.batch_size,
            shuffle=False,
            num_workers=h.num_workers,
            persistent_workers=h.persistent_workers and h.num_workers > 0,
            generator=loader_generator(h.seed),
        )
