"""Lightning data module over token folders, for ``larp train generator``."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from larp_video.data.datasets import EpochSampler
from larp_video.data.resumable_loader import ResumableDataLoader, batches_done_in_epoch, fingerprint_data, loader_generator
from larp_video.data.token_dataset import TokenDataset

logger = logging.getLogger(__name__)


class TokenDataModule(L.LightningDataModule):
    """Training and validation clips from folders written by ``larp tokenize-dataset``.

    Args:
        train: token folder, or a list of them, for training.
        val: token folder(s) for validation. When None, ``val_fraction`` of the training
            videos are held out with all of their clips, so no video is in both sets. Without
            both there is no validation.
        val_fraction: fraction of the training videos held out when ``val`` is None.
        batch_size: clips per step and process (under DDP the global batch is this times the
            number of processes).
        num_workers: data loader worker processes.
        seed: seed of the held-out video draw and of the order of training clips in each epoch.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        val_fraction: float = 0.0,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.save_hyperparameters()
        self.train_dataset: TokenDataset | None = None
        self.val_dataset: TokenDataset | None = None

    @property
    def token_settings(self) -> dict[str, Any]:
        """Settings of the training tokens (tokenizer hashes, clip shape, codebook, mode)."""
        if self.train_dataset is None:
            raise RuntimeError("call setup() before reading token_settings")
        return self.train_dataset.settings

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if self.train_dataset is not None:
            return
        if h.val is not None:
            self.train_dataset = TokenDataset(h.train)
            self.val_dataset = TokenDataset(h.val)
        elif h.val_fraction > 0:
            videos = TokenDataset(h.train).video_positions()
            held_out = split_videos(videos, h.val_fraction, h.seed)
            self.train_dataset = TokenDataset(h.train, videos=[v for v in videos if v not in held_out])
            self.val_dataset = TokenDataset(h.train, videos=sorted(held_out))
        else:
            self.train_dataset = TokenDataset(h.train)
        logger.info(
            "training on %d clips, validating on %d",
            len(self.train_dataset), 0 if self.val_dataset is None else len(self.val_dataset),
        )

    def train_dataloader(self) -> DataLoader:
        # An order drawn from the seed and the epoch, so a resumed epoch repeats it.
        sampler = EpochSampler(len(self.train_dataset), seed=self.hparams.seed, with_seeds=False)
        return ResumableDataLoader(
            self.train_dataset,
            batches_done=self._batches_done,
            data_key=fingerprint_data(self.train_dataset.shard_paths, len(self.train_dataset), self.hparams.seed),
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            drop_last=len(self.train_dataset) >= self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            generator=loader_generator(self.hparams.seed),
        )

    def _batches_done(self) -> int:
        return batches_done_in_epoch(self.trainer)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(
            self.val_dataset,
            batch_size=self.hparams.batch_size,
            shuffle=False,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            generator=loader_generator(self.hparams.seed),
        )


def split_videos(videos: list[int], fraction: float, seed: int) -> set[int]:
    """Return a seeded ``fraction`` of ``videos`` (at least one, and at least one left over)."""
    if len(videos) < 2:
        raise ValueError(
            f"a validation split by video needs at least 2 videos, got {len(videos)}; pass a val folder instead"
        )
    count = min(len(videos) - 1, max(1, round(fraction * len(videos))))
    return set(random.Random(seed).sample(sorted(videos), count))
