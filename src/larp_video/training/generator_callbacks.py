"""Callback that samples videos from the generator during training and saves them as files."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from larp_video.config import ConfigError
from larp_video.data.transforms import tensor_to_frames
from larp_video.generation.grids import save_sample_grids
from larp_video.runtime import PRECISIONS, autocast
from larp_video.training.sharding import is_sharded

logger = logging.getLogger(__name__)


class GeneratorSampleCallback(L.Callback):
    """Every ``every_n_steps`` optimizer steps (and at the end of training), sample videos.

    Class-conditional generators sample ``num_videos`` videos of ``classes`` (default: classes
    0, 1, 2, ... in turn). Frame-prediction generators continue ``num_videos`` validation clips
    (training clips without validation) evenly spaced through the dataset, and each real clip,
    decoded from its tokens, is saved beside its prediction. The tokenizer decodes the tokens.
    Files go to ``RUN/samples/step-NNNNNNN/``: ``grid.gif``, ``grid.png`` and, with
    ``save_videos``, one mp4 per video. The PNG grid is logged to TensorBoard loggers.

    Only the global-zero process samples, with the generator's own weights, so this works
    under DDP. Under FSDP the weights are sharded across processes: the callback then logs a
    warning once and does not sample, and ``larp sample`` samples from the checkpoints.

    Args:
        tokenizer: model directory, Hub id or tokenizer ``.ckpt``; None for the bundled default.
        every_n_steps: sampling interval in optimizer steps; 0 samples only at the end.
        num_videos: videos per sampling round.
        classes: class labels to sample (class-conditional only).
        cfg_scale: classifier-free guidance scale (class-conditional only).
        temperature: sampling temperature.
        top_k: top-k filter (0 keeps all).
        top_p: nucleus filter (1 keeps all).
        seed: seed of the sampling streams (the same every round, so rounds are comparable).
        fps: frame rate of the written videos and the GIF.
        precision: "fp32" or "bf16" autocast while sampling.
        save_videos: also write one mp4 per video.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        every_n_steps: int = 1000,
        num_videos: int = 8,
        classes: list[int] | None = None,
        cfg_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        fps: float = 8.0,
        precision: str = "fp32",
        save_videos: bool = True,
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if num_videos < 1:
            raise ValueError(f"num_videos must be at least 1, got {num_videos}")
        self.tokenizer_spec = tokenizer
        self.every_n_steps = every_n_steps
        self.num_videos = num_videos
        self.classes = classes
        self.cfg_scale = cfg_scale
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.fps = fps
        self.precision = precision
        self.save_videos = save_videos
        self._tokenizer = None
        self._last_step = -1
        self._warned_sharded = False

    def on_fit_start(self, trainer, pl_module) -> None:
        """Load the tokenizer before the first step, so a wrong path or codebook fails at once."""
        if not trainer.is_global_zero:
            return
        tokens = self.tokenizer(pl_module.device).config
        config = pl_module.generator.config
        if (tokens.codebook_size, tokens.num_tokens) != (config.vocab_size, config.num_tokens):
            raise ConfigError(
                f"the sample callback's tokenizer {self.tokenizer_spec or 'bundled default'} makes {tokens.num_tokens} "
                f"tokens from {tokens.codebook_size} codes, but the generator models {config.num_tokens} tokens from "
                f"{config.vocab_size}; set the callback's tokenizer to the one that made the training tokens"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.sample_logging_errors(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self.sample_logging_errors(trainer, pl_module)

    def sample_logging_errors(self, trainer, pl_module) -> None:
        """Sample, and log instead of raise a failure, so that a full disk or a bad video
        encoder never ends a training run."""
        try:
            self.sample(trainer, pl_module)
        except (OSError, RuntimeError, ValueError):
            logger.exception("sampling at step %d failed; training continues", trainer.global_step)

    def sample(self, trainer, pl_module) -> Path | None:
        """Sample one round now; returns the round's folder on the global-zero process."""
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return None
        if is_sharded(pl_module.generator):
            if not self._warned_sharded:
                logger.warning(
                    "the generator is sharded with FSDP, so the sample callback cannot sample in one process; "
                    "sample from the checkpoints with `larp sample` instead"
                )
                self._warned_sharded = True
            return None
        generator = pl_module.generator
        tokenizer = self.tokenizer(pl_module.device)
        conditions, real_tokens, labels = self.conditions(trainer, pl_module)

        with torch.no_grad(), autocast(pl_module.device, self.precision):
            streams = torch.Generator(device=pl_module.device).manual_seed(self.seed)
            tokens = generator.generate(
                conditions,
                cfg_scale=self.cfg_scale if not generator.config.frame_prediction else 1.0,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                generator=streams,
            )
            videos = [tensor_to_frames(video) for video in tokenizer.decode(tokens).float().cpu()]
            if real_tokens is not None:
                real = [tensor_to_frames(video) for video in tokenizer.decode(real_tokens).float().cpu()]
                videos = [frame for pair in zip(real, videos) for frame in pair]
                labels = [text for label in labels for text in (f"{label} real", f"{label} predicted")]

        folder = Path(trainer.default_root_dir) / "samples" / f"step-{trainer.global_step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        columns = 2 if real_tokens is not None else min(8, len(videos))
        _, png = save_sample_grids(folder / "grid", videos, labels, columns=columns, fps=self.fps)
        if self.save_videos:
            from larp_video.data.video_io import write_video

            for number, video in enumerate(videos):
                write_video(folder / f"{number:02d}.mp4", video, self.fps)
        self.log_image(trainer, png)
        logger.info("saved %d sampled videos to %s", len(videos), folder)
        return folder

    def tokenizer(self, device: torch.device):
        if self._tokenizer is None:
            from larp_video.pretrained import load_tokenizer

            self._tokenizer, _ = load_tokenizer(self.tokenizer_spec, device=device)
        return self._tokenizer.to(device)

    def conditions(self, trainer, pl_module) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
        """Return the generator input, the real clips' tokens (frame prediction) and row labels."""
        config = pl_module.generator.config
        device = pl_module.device
        if not config.frame_prediction:
            classes = self.classes or list(range(config.num_classes))
            labels = [classes[number % len(classes)] for number in range(self.num_videos)]
            names = getattr(pl_module, "class_names", {}) or {}
            return torch.tensor(labels, device=device), None, [names.get(label, f"class {label}") for label in labels]

        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "val_dataset", None) or datamodule.train_dataset
        count = min(self.num_videos, len(dataset))
        rows = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
        items = [dataset[row] for row in rows]
        condition = torch.stack([item["condition"] for item in items]).to(device)
        real = torch.stack([item["tokens"] for item in items]).to(device)
        return condition, real, [f"clip {row}" for row in rows]

    @staticmethod
    def log_image(trainer, png: Path) -> None:
        from PIL import Image

        image = None
        for experiment_logger in trainer.loggers:
            if isinstance(experiment_logger, TensorBoardLogger):
                image = image if image is not None else np.asarray(Image.open(png).convert("RGB"))
                experiment_logger.experiment.add_image("samples", image, trainer.global_step, dataformats="HWC")
