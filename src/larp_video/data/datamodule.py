"""Lightning data module over video files for tokenizer training."""

from __future__ import annotations

import logging

import lightning as L
from torch.utils.data import DataLoader

from larp_video.data.datasets import VideoClipDataset, list_videos

logger = logging.getLogger(__name__)


class VideoDataModule(L.LightningDataModule):
    """Random training clips and fixed validation clips from folders, lists or manifests.

    Args:
        train: folder, ``.txt`` list, ``.csv`` manifest (``id,path,action,label``) or a list of them.
        val: the same for validation; None skips validation.
        num_frames: frames per clip; must equal the tokenizer's clip length.
        image_size: clip side after short-side resize and centre crop; must equal the tokenizer's.
        batch_size: clips per step and process.
        num_workers: data loader worker processes.
        flip: random horizontal flips in training.
        repeats: random clips drawn from each training video per epoch.
        seed: seed of the fixed validation clips.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        num_frames: int = 16,
        image_size: int = 128,
        batch_size: int = 8,
        num_workers: int = 2,
        flip: bool = True,
        repeats: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_dataset: VideoClipDataset | None = None
        self.val_dataset: VideoClipDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if self.train_dataset is None:
            videos = list_videos(h.train)
            logger.info("training on %d videos", len(videos))
            self.train_dataset = VideoClipDataset(
                videos, h.num_frames, h.image_size, random_clips=True, flip=h.flip, repeats=h.repeats
            )
        if h.val is not None and self.val_dataset is None:
            videos = list_videos(h.val)
            self.val_dataset = VideoClipDataset(videos, h.num_frames, h.image_size, random_clips=False, seed=h.seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=len(self.train_dataset) >= self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            pin_memory=False,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        return DataLoader(
            self.val_dataset,
            batch_size=self.hparams.batch_size,
            shuffle=False,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )
