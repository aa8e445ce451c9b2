"""LightningModule that trains a LARP tokenizer.

The loss is L1 reconstruction + VQ (codebook and commitment) + the AR prior's cross-entropy,
each with its own weight. Optimisation is manual so that further optimizers (a discriminator)
can step on their own schedule; the learning rate follows a per-step warm-up and cosine.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch
import torch.nn.functional as F

from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.training.schedules import warmup_cosine

logger = logging.getLogger(__name__)


class TokenizerTrainingModule(L.LightningModule):
    """Train ``LARPTokenizer`` on batches ``{"video": (B, 3, T, S, S) in [0, 1]}``.

    Args:
        tokenizer: tokenizer config (size, clip, codebook, prior).
        learning_rate: Adam learning rate of the tokenizer.
        betas: Adam betas.
        weight_decay: Adam weight decay.
        prior_lr_multiplier: the prior's learning rate relative to ``learning_rate``.
        warmup_steps: linear warm-up length in optimizer steps (used when warmup_epochs is 0).
        warmup_epochs: warm-up length in epochs; converted to steps at the start of training.
        warmup_start_ratio: learning-rate multiplier at step 0.
        final_lr_ratio: learning-rate multiplier at the last step of the cosine.
        l1_weight: weight of the L1 reconstruction loss.
        vq_weight: weight of the VQ loss (codebook + 0.25 x commitment).
        prior_weight: weight of the prior's cross-entropy.
        gradient_clip_norm: max global gradient norm; None disables clipping.
    """

    def __init__(
        self,
        tokenizer: TokenizerConfig = TokenizerConfig.preset("tiny"),
        learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        prior_lr_multiplier: float = 1.0,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        warmup_start_ratio: float = 0.01,
        final_lr_ratio: float = 0.01,
        l1_weight: float = 1.0,
        vq_weight: float = 0.1,
        prior_weight: float = 0.06,
        gradient_clip_norm: float | None = 1.0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.model_config = tokenizer
        self.tokenizer = LARPTokenizer(tokenizer)
        self.automatic_optimization = False

    @staticmethod
    def add_cli_links(parser) -> None:
        """Let the data module take its clip size from the tokenizer config."""
        parser.link_arguments("model.tokenizer.num_frames", "data.num_frames")
        parser.link_arguments("model.tokenizer.image_size", "data.image_size")

    # ----------------------------------------------------------------------------------------
    # Optimisation
    # ----------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return max(1, int(self.trainer.estimated_stepping_batches))

    def resolved_warmup_steps(self) -> int:
        h = self.hparams
        if h.warmup_epochs > 0:
            steps_per_epoch = self.total_steps / max(1, self.trainer.max_epochs or 1)
            return int(round(h.warmup_epochs * steps_per_epoch))
        return int(h.warmup_steps)

    def configure_optimizers(self):
        h = self.hparams
        prior_params = list(self.tokenizer.prior.parameters()) if self.tokenizer.prior is not None else []
        prior_ids = {id(p) for p in prior_params}
        groups = [{"params": [p for p in self.tokenizer.parameters() if id(p) not in prior_ids], "lr": h.learning_rate}]
        if prior_params:
            groups.append({"params": prior_params, "lr": h.learning_rate * h.prior_lr_multiplier})
        optimizer = torch.optim.Adam(groups, lr=h.learning_rate, betas=tuple(h.betas), weight_decay=h.weight_decay)

        total, warmup = self.total_steps, self.resolved_warmup_steps()
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, h.warmup_start_ratio, h.final_lr_ratio)
        )
        return [optimizer], [{"scheduler": schedule, "interval": "step"}]

    # ----------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------

    def compute_losses(self, video: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run the tokenizer and return the weighted total and the logged breakdown."""
        h = self.hparams
        output = self.tokenizer(video, step=step, total_steps=self.total_steps)
        l1 = F.l1_loss(output.reconstruction.float(), video.float())
        total = h.l1_weight * l1 + h.vq_weight * output.vq_loss
        logs = {
            "l1": l1.detach(),
            "vq_loss": output.vq_loss.detach(),
            "codebook_loss": output.codebook_loss.detach(),
            "commitment_loss": output.commitment_loss.detach(),
            "codebook_usage": output.codebook_usage,
        }
        if output.prior_loss is not None:
            total = total + h.prior_weight * output.prior_loss
            logs.update(
                prior_loss=output.prior_loss.detach(),
                prior_top1=output.prior_top1_accuracy,
                prior_top5=output.prior_top5_accuracy,
                scheduled_sampling_ratio=torch.tensor(output.scheduled_sampling_ratio),
            )
        logs["loss"] = total.detach()
        return total, logs

    def training_step(self, batch, batch_index):
        video = batch["video"]
        optimizer = self.optimizers()
        schedule = self.lr_schedulers()

        loss, logs = self.compute_losses(video, self.global_step)
        check_finite(loss, logs, self.global_step)

        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.gradient_clip_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        schedule.step()

        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=False, batch_size=video.shape[0])
        self.log("train/lr", optimizer.param_groups[0]["lr"], batch_size=video.shape[0])
        self.log("loss", logs["loss"], prog_bar=True, logger=False, batch_size=video.shape[0])
        return loss

    def validation_step(self, batch, batch_index):
        video = batch["video"]
        reconstruction = self.tokenizer.decode_codes(self.tokenizer.encode(video).codes).float().clamp(0, 1)
        mse = (reconstruction - video.float()).square().flatten(1).mean(1)
        psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()
        self.log("val/l1", F.l1_loss(reconstruction, video.float()), batch_size=video.shape[0], sync_dist=True)
        self.log("val/psnr", psnr, prog_bar=True, batch_size=video.shape[0], sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokenizer_config"] = self.model_config.to_dict()


def check_finite(loss: torch.Tensor, logs: dict[str, torch.Tensor], step: int) -> None:
    """Raise ``FloatingPointError`` naming the step and the non-finite terms."""
    if torch.isfinite(loss):
        return
    bad = {name: float(value) for name, value in logs.items() if not math.isfinite(float(value))}
    raise FloatingPointError(
        f"non-finite training loss at step {step}: {bad or float(loss)}; lower the learning rate, "
        "enable gradient clipping, or resume from an earlier checkpoint"
    )
