"""Callbacks that show what tokenizer training is doing: previews, skipped files, progress."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from larp_video.data.datasets import parse_skipped
from larp_video.data.transforms import tensor_to_frames
from larp_video.visualize import frame_rows, save_frame_grid

logger = logging.getLogger(__name__)


class ReconstructionPreviews(L.Callback):
    """Write input and output frames of a few clips as a PNG and to image-capable loggers.

    Training previews show the current batch on the steps the module chooses. Validation
    previews show the first validation batch after each validation run, with the EMA weights
    when the module has them, so the same clips can be compared over time. The module
    provides the tensors as ``preview_inputs``: a dict from "train" or "val" to a triple
    (tokenizer step, input, reconstruction) with (B, 3, T, H, W) clips. PNGs go to
    ``<log_dir>/previews/<tag>-step<step>.png``, where log_dir is the first logger's folder or
    the trainer's ``default_root_dir``.
    """

    def __init__(self, num_clips: int = 4, num_frames: int = 8):
        self.num_clips = num_clips
        self.num_frames = num_frames

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        preview = pl_module.preview_inputs.pop("train", None)
        if preview is not None:
            self._write(trainer, "train", *preview)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        preview = pl_module.preview_inputs.pop("val", None)
        if preview is not None and not trainer.sanity_checking:
            self._write(trainer, "val", *preview)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, tag: str, step: int, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        inputs, outputs = (tensor[: self.num_clips].detach().float().cpu() for tensor in (inputs, outputs))
        rows, labels = [], []
        for index in range(inputs.shape[0]):
            real, fake = frame_rows([tensor_to_frames(inputs[index]), tensor_to_frames(outputs[index])], self.num_frames)
            rows.extend([real, fake])
            labels.extend([f"clip {index} input", f"clip {index} output"])

        path = save_frame_grid(preview_dir(trainer) / f"{tag}-step{step:08d}.png", rows, labels)
        image = np.asarray(_read_png(path))
        for experiment_logger in trainer.loggers:
            log_image(experiment_logger, f"preview/{tag}", image, step)


def preview_dir(trainer: L.Trainer) -> Path:
    # The first logger's own log_dir: Trainer.log_dir broadcasts, which must not run on rank 0 alone.
    base = getattr(trainer.loggers[0], "log_dir", None) if trainer.loggers else None
    return Path(base or trainer.default_root_dir) / "previews"


def log_image(experiment_logger: Any, key: str, image: np.ndarray, step: int) -> None:
    """Send a uint8 (H, W, 3) image to a logger that accepts images; others are skipped."""
    if isinstance(experiment_logger, TensorBoardLogger):
        experiment_logger.experiment.add_image(key, image, step, dataformats="HWC")
    elif hasattr(experiment_logger, "log_image"):
        # WandbLogger, NeptuneLogger and CometLogger take lists of images.
        experiment_logger.log_image(key=key, images=[image], step=step)


def _read_png(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").copy()


class SkippedVideoReport(L.Callback):
    """Count the unreadable files that data loading skipped, and summarise them each epoch.

    Each process logs a warning the first time a batch reports a file, with the reason. At
    the end of every training epoch the counts of all ranks are gathered, rank 0 logs one
    summary line, and ``data/skipped_clips`` (clips replaced this epoch, over all ranks) is
    logged as a metric.
    """

    def __init__(self, max_listed: int = 10):
        self.max_listed = max_listed
        self.counts: Counter[str] = Counter()
        self.reasons: dict[str, str] = {}
        self.warned: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._record(batch)

    def _record(self, batch: Any) -> None:
        if not isinstance(batch, dict) or "skipped" not in batch:
            return
        for path, reason in parse_skipped(batch["skipped"]):
            self.counts[path] += 1
            self.reasons.setdefault(path, reason)
            if path not in self.warned:
                self.warned.add(path)
                logger.warning("skipped unreadable video %s (%s); it is replaced by another clip", path, reason)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts, reasons = self.counts, self.reasons
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (dict(self.counts), self.reasons))
            counts, reasons = Counter(), {}
            for rank_counts, rank_reasons in gathered:
                counts.update(rank_counts)
                reasons.update(rank_reasons)

        total = sum(counts.values())
        # Every rank has the same total, so "max" keeps it and satisfies Lightning's epoch-level sync.
        pl_module.log("data/skipped_clips", float(total), sync_dist=True, reduce_fx="max")
        if total and trainer.is_global_zero:
            listed = ", ".join(f"{path} ({count}x: {reasons[path]})" for path, count in counts.most_common(self.max_listed))
            more = len(counts) - self.max_listed
            logger.warning(
                "epoch %d: %d clips were replaced because %d files could not be read: %s%s",
                trainer.current_epoch,
                total,
                len(counts),
                listed,
                f" and {more} more" if more > 0 else "",
            )
        self.counts = Counter()
        self.reasons = {}


class StepProgressBar(TQDMProgressBar):
    """Progress bar over the whole run: optimizer steps done of the planned total, steps/s and ETA.

    Lightning's default bar restarts every epoch, which hides the time left when epochs are
    short (many repeats of few videos) or long (one pass over Kinetics).
    """

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.unit = "step"
        bar.reset(total=_finite_or_none(trainer.estimated_stepping_batches))
        bar.initial = trainer.global_step
        bar.n = trainer.global_step

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and not bar.disable and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar


def _finite_or_none(value: float | int) -> int | None:
    value = float(value)
    return None if value != value or value == float("inf") else int(value)
