"""LightningModule that trains a LARP tokenizer with the reference recipe.

Generator loss = l1_weight * L1 + lpips_weight * LPIPS-VGG + gan_weight * non-saturating GAN
+ vq_weight * VQ + prior_weight * prior cross-entropy. The discriminator has its own Adam and is
updated every ``discriminator_every`` tokenizer steps; an EMA of the tokenizer's weights is kept
for validation and export.

Steps: the module counts the tokenizer's optimizer steps itself (``tokenizer_step``, saved in
checkpoints) and drives the learning-rate schedule, the GAN start, the discriminator interval
and the prior's scheduled-sampling ramp from it. The discriminator's optimizer is stepped
through ``trainer.strategy.optimizer_step``, which runs the precision plugin (fp16 loss
scaling) but not Lightning's step counting, so ``trainer.global_step`` also counts tokenizer
steps only and ``trainer.max_steps`` means tokenizer optimizer steps.
"""

from __future__ import annotations

import logging
import os

import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.nn.parallel import DistributedDataParallel

from larp_video.config import ConfigError
from larp_video.models.discriminator import DiscriminatorConfig
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.training.adversarial import AdversarialLoss
from larp_video.training.callbacks import ReconstructionPreviews, SkippedVideoReport, StepProgressBar
from larp_video.training.checkpoint_io import AtomicCheckpointIO
from larp_video.training.ema import ExponentialMovingAverage
from larp_video.training.gan_losses import adaptive_gan_weight
from larp_video.training.rng import seed_rank
from larp_video.training.schedules import warmup_cosine
from larp_video.training.sharding import TOKENIZER_METHODS, check_strategy, shard_models
from larp_video.training.tokenizer_metrics import check_finite, clip_psnr, codebook_statistics, reduce_over_ranks
from larp_video.training.tokenizer_optimizers import build_optimizers, learning_rate_logs, set_learning_rates
from larp_video.training.training_state import CheckpointedTrainingState

logger = logging.getLogger(__name__)


class TokenizerTrainingModule(CheckpointedTrainingState, L.LightningModule):
    """Train ``LARPTokenizer`` on batches ``{"video": (B, 3, T, S, S) in [0, 1]}``.

    Args:
        tokenizer: tokenizer config (size, clip, codebook, prior). Fields that a config file
            leaves out take the ``TokenizerConfig`` defaults (the "L" size).
        learning_rate: Adam learning rate of the tokenizer.
        betas: Adam betas of the tokenizer and the prior.
        weight_decay: Adam weight decay (L2) of the tokenizer and the prior.
        prior_lr_multiplier: the prior's learning rate relative to ``learning_rate``.
        warmup_steps: linear warm-up length in tokenizer steps (used when warmup_epochs is 0).
        warmup_epochs: warm-up length in epochs, converted with the batches per epoch of one process.
        warmup_start_ratio: learning-rate multiplier at step 0.
        final_lr_ratio: learning-rate multiplier at the last step of the cosine.
        gradient_clip_norm: max global gradient norm of each optimizer; None disables clipping.
        ema_decay: decay of the EMA of the tokenizer's weights; None disables the EMA.
        l1_weight: weight of the L1 reconstruction loss.
        lpips_weight: weight of LPIPS-VGG; 0 loads no LPIPS network.
        lpips_frames: frames per clip scored by LPIPS, drawn at random each step; None scores all.
        lpips_source: where the LPIPS weights come from ("auto", "carrier", "download").
        lpips_start_step: tokenizer step from which LPIPS counts (0 in LARP). A small model on
            few videos learns a texture that LPIPS likes before it learns the input; L1 alone
            first avoids that.
        vq_weight: weight of the VQ loss (codebook + 0.25 x commitment).
        prior_weight: weight of the prior's cross-entropy.
        sample_codes: sample codes from the quantizer's softmax in training (the reference);
            False takes the argmax, which makes training deterministic.
        gan_weight: weight of the generator's GAN loss; 0 builds no discriminator.
        gan_start_step: first tokenizer step with the GAN loss.
        discriminator: discriminator sizes; None uses the reference sizes. Its clip is set to the
            tokenizer's.
        discriminator_every: the discriminator is updated on tokenizer steps divisible by this.
        discriminator_start_step: first step with discriminator updates; None means gan_start_step.
        discriminator_lr: Adam learning rate of the discriminator (same schedule as the tokenizer).
        discriminator_betas: Adam betas of the discriminator; None means ``betas``.
        label_noise: scale of the one-sided label noise of the discriminator loss.
        lecam_weight: weight of the LeCam regulariser; 0 disables it.
        lecam_decay: decay of LeCam's moving averages.
        adaptive_gan_weight: multiply gan_weight by the VQGAN ratio of gradient norms at the
            decoder's last layer, averaged over ranks.
        adaptive_gan_max: clamp of that ratio.
        compile: compile the encoder, decoder and discriminator with ``torch.compile``.
        compile_mode: torch.compile mode for the inductor backend.
        compile_backend: torch.compile backend ("inductor"; "eager" only checks tracing).
        sampling_seed: base of the per-rank random seeds; None takes Lightning's ``seed_everything`` value.
        preview_every_n_steps: write an input/output preview every this many steps; 0 disables.
        preview_clips: clips per preview.
        preview_frames: frames per clip in a preview.
    """

    def __init__(
        self,
        tokenizer: TokenizerConfig = TokenizerConfig(),
        learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        weight_decay: float = 0.0,
        prior_lr_multiplier: float = 1.0,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        warmup_start_ratio: float = 0.01,
        final_lr_ratio: float = 0.01,
        gradient_clip_norm: float | None = 1.0,
        ema_decay: float | None = 0.9999,
        l1_weight: float = 1.0,
        lpips_weight: float = 1.0,
        lpips_frames: int | None = 4,
        lpips_source: str = "auto",
        lpips_start_step: int = 0,
        vq_weight: float = 0.1,
        prior_weight: float = 0.06,
        sample_codes: bool = True,
        gan_weight: float = 0.3,
        gan_start_step: int = 0,
        discriminator: DiscriminatorConfig | None = None,
        discriminator_every: int = 5,
        discriminator_start_step: int | None = None,
        discriminator_lr: float = 3e-5,
        discriminator_betas: tuple[float, float] | None = None,
        label_noise: float = 0.15,
        lecam_weight: float = 1e-6,
        lecam_decay: float = 0.999,
        adaptive_gan_weight: bool = False,
        adaptive_gan_max: float = 1e4,
        compile: bool = False,
        compile_mode: str = "default",
        compile_backend: str = "inductor",
        sampling_seed: int | None = None,
        preview_every_n_steps: int = 500,
        preview_clips: int = 4,
        preview_frames: int = 8,
    ):
        super().__init__()
        if isinstance(tokenizer, dict):
            tokenizer = TokenizerConfig.from_dict(tokenizer)
        if isinstance(discriminator, dict):
            discriminator = DiscriminatorConfig.from_dict(discriminator)
        if discriminator_every < 1:
            raise ValueError(f"discriminator_every must be at least 1, got {discriminator_every}")
        if lpips_frames is not None and not 1 <= lpips_frames <= tokenizer.num_frames:
            raise ValueError(f"lpips_frames must be None or in [1, {tokenizer.num_frames}], got {lpips_frames}")
        self.save_hyperparameters(ignore=["tokenizer", "discriminator"])
        self.automatic_optimization = False
        self.model_config = tokenizer
        self.tokenizer = LARPTokenizer(tokenizer)
        self.ema = ExponentialMovingAverage(self.tokenizer, ema_decay) if ema_decay is not None else None

        self.discriminator_config = None
        self.adversarial = None
        if gan_weight > 0:
            config = discriminator or DiscriminatorConfig()
            self.discriminator_config = config.replace(num_frames=tokenizer.num_frames, image_size=tokenizer.image_size)
            self.adversarial = AdversarialLoss(self.discriminator_config, label_noise, lecam_weight, lecam_decay)

        # Frozen and identical on every rank: kept out of the state dict and away from DDP.
        self.__dict__["lpips"] = None
        if lpips_weight > 0:
            from larp_video.evaluation.lpips import load_lpips

            self.__dict__["lpips"] = load_lpips(lpips_source)

        if compile:
            options = {"backend": compile_backend}
            if compile_backend == "inductor":
                options["mode"] = compile_mode
            # Module.compile keeps parameter names, so checkpoints load into uncompiled models.
            for module in (self.tokenizer.encoder, self.tokenizer.decoder):
                module.compile(**options)
            if self.adversarial is not None:
                self.adversarial.discriminator.compile(**options)

        self.tokenizer_step = 0
        self.sampling_generator: torch.Generator | None = None
        self.preview_inputs: dict[str, tuple] = {}
        self.gradient_norms: dict[str, torch.Tensor] = {}
        self._total_steps: int | None = None
        self._warmup_steps = 0
        self._pending_rng_states: list | None = None
        self.base_seed = 0

    @staticmethod
    def add_cli_links(parser) -> None:
        """Let the data module take its clip size from the tokenizer config."""
        parser.link_arguments("model.tokenizer.num_frames", "data.num_frames")
        parser.link_arguments("model.tokenizer.image_size", "data.image_size")

    # ----------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------

    def configure_callbacks(self):
        callbacks = [SkippedVideoReport()]
        if self.hparams.preview_every_n_steps > 0:
            callbacks.append(ReconstructionPreviews(self.hparams.preview_clips, self.hparams.preview_frames))
        # Replaces Lightning's default bar only; a bar configured by the user stays.
        if self._trainer is not None and type(self.trainer.progress_bar_callback) is TQDMProgressBar:
            callbacks.append(StepProgressBar())
        return callbacks

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        sharded = check_strategy(strategy, "tokenizer")
        if sharded and self.ema is not None:
            # NOTE: the EMA copies whole weights, which FSDP shards; it needs DDP or one device.
            raise ConfigError("model.ema_decay needs the full weights on every rank; with FSDP set model.ema_decay=null")
        if sharded and self.hparams.adaptive_gan_weight:
            raise ConfigError(
                "model.adaptive_gan_weight takes gradients with respect to the whole output layer, which FSDP "
                "shards; with FSDP set model.adaptive_gan_weight=false"
            )

    def configure_model(self) -> None:
        """Shard the tokenizer (with its prior) and the discriminator with FSDP2.

        Only ``ModelParallelStrategy`` provides a device mesh; under the other strategies this
        does nothing. See ``larp_video.training.sharding``.
        """
        models = [(self.tokenizer, TOKENIZER_METHODS)]
        if self.adversarial is not None:
            models.append((self.adversarial.discriminator, ()))
        shard_models(self.device_mesh, models)

    def on_fit_start(self) -> None:
        ddp_model = self.trainer.strategy.model
        if isinstance(ddp_model, DistributedDataParallel) and self.adversarial is not None:
            if not ddp_model.find_unused_parameters:
                raise ConfigError(
                    "the discriminator and the tokenizer are updated by separate backward passes, which DDP "
                    "accepts only with find_unused_parameters; set trainer.strategy=ddp_find_unused_parameters_true"
                )
        self._move_frozen_models()
        seed = self.hparams.sampling_seed
        self.base_seed = seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.sampling_generator = seed_rank(self.base_seed, self.global_rank, self.device)

    def on_validation_start(self) -> None:
        self._move_frozen_models()

    def on_train_start(self) -> None:
        trainer = self.trainer
        self._total_steps = max(1, int(trainer.estimated_stepping_batches))
        self._warmup_steps = int(self.hparams.warmup_steps)
        if self.hparams.warmup_epochs > 0:
            batches = float(trainer.num_training_batches)
            if batches == float("inf"):
                raise ConfigError("warmup_epochs needs a dataset with a length; set model.warmup_steps instead")
            self._warmup_steps = int(round(self.hparams.warmup_epochs * batches))
        logger.info(
            "training for %d tokenizer steps with %d warm-up steps, from step %d",
            self._total_steps, self._warmup_steps, self.tokenizer_step,
        )
        if self.tokenizer_step != trainer.global_step:
            logger.warning("tokenizer step %d differs from the trainer's global step %d", self.tokenizer_step, trainer.global_step)
        self.restore_rng_states()

    def _move_frozen_models(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)
        if self.lpips is not None:
            self.lpips.to(self.device)

    def configure_optimizers(self):
        h = self.hparams
        return build_optimizers(
            self.tokenizer,
            self.adversarial,
            self.base_learning_rates(),
            betas=h.betas,
            weight_decay=h.weight_decay,
            discriminator_betas=h.discriminator_betas or h.betas,
        )

    def base_learning_rates(self) -> dict[str, float]:
        h = self.hparams
        return {
            "tokenizer": h.learning_rate,
            "prior": h.learning_rate * h.prior_lr_multiplier,
            "discriminator": h.discriminator_lr,
        }

    @property
    def total_steps(self) -> int:
        """Planned tokenizer steps of this run (``trainer.estimated_stepping_batches``)."""
        if self._total_steps is None:
            self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return self._total_steps

    def learning_rate_factor(self, step: int) -> float:
        h = self.hparams
        return warmup_cosine(step, self.total_steps, self._warmup_steps, h.warmup_start_ratio, h.final_lr_ratio)

    def _set_learning_rates(self, optimizers, step: int) -> None:
        set_learning_rates(optimizers, self.base_learning_rates(), self.learning_rate_factor(step))

    def discriminator_updates_at(self, step: int) -> bool:
        h = self.hparams
        start = h.gan_start_step if h.discriminator_start_step is None else h.discriminator_start_step
        return self.adversarial is not None and step >= start and step % h.discriminator_every == 0

    def gan_active_at(self, step: int) -> bool:
        return self.adversarial is not None and step >= self.hparams.gan_start_step

    # ----------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------

    def training_step(self, batch, batch_index):
        video = batch["video"]
        step = self.tokenizer_step
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        self._set_learning_rates(optimizers, step)

        output = self.tokenizer(
            video,
            step=step,
            total_steps=self.total_steps,
            sample_codes=self.hparams.sample_codes,
            generator=self.sampling_generator,
        )
        logs: dict[str, torch.Tensor] = {}
        if self.discriminator_updates_at(step):
            logs.update(self._discriminator_step(optimizers[1], video, output.reconstruction, step))

        loss, generator_logs = self.generator_loss(video, output, step)
        generator_logs, counts = reduce_over_ranks(self.trainer.strategy, generator_logs, output.code_counts)
        check_finite(generator_logs["loss"], generator_logs, step, "tokenizer")
        logs.update(generator_logs)
        # Usage and perplexity of the global batch, from the code counts summed over ranks.
        logs["codebook_usage"], logs["codebook_perplexity"] = codebook_statistics(counts)

        optimizers[0].zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizers[0].step()
        if self.ema is not None:
            self.ema.update(self.tokenizer)
        self.tokenizer_step += 1

        if self.hparams.preview_every_n_steps and step % self.hparams.preview_every_n_steps == 0:
            self.preview_inputs["train"] = (step, video.detach(), output.reconstruction.detach().float().clamp(0, 1))
        self._log_step(logs, optimizers, step, video.shape[0])
        return loss.detach()

    def generator_loss(self, video: torch.Tensor, output, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the weighted loss of the tokenizer and prior, and its terms for logging."""
        h = self.hparams
        reconstruction = output.reconstruction
        l1 = F.l1_loss(reconstruction.float(), video.float())
        reconstruction_loss = h.l1_weight * l1
        logs = {"l1": l1.detach()}
        if self.lpips is not None and step >= h.lpips_start_step:
            from larp_video.evaluation.lpips import video_lpips

            perceptual = video_lpips(
                self.lpips, video, reconstruction, frames_per_clip=h.lpips_frames, generator=self.sampling_generator
            ).mean()
            reconstruction_loss = reconstruction_loss + h.lpips_weight * perceptual
            logs["lpips"] = perceptual.detach()

        total = reconstruction_loss + h.vq_weight * output.vq_loss
        logs.update(
            vq_loss=output.vq_loss.detach(),
            codebook_loss=output.codebook_loss.detach(),
            commitment_loss=output.commitment_loss.detach(),
        )

        if self.gan_active_at(step):
            gan = self.adversarial.generator_loss(reconstruction)
            weight = torch.tensor(h.gan_weight, device=gan.device)
            if h.adaptive_gan_weight:
                ratio = adaptive_gan_weight(
                    reconstruction_loss, gan, self.tokenizer.head.linear.weight, max_weight=h.adaptive_gan_max
                )
                weight = weight * self.trainer.strategy.reduce(ratio, reduce_op="mean")
            total = total + weight * gan
            logs.update(gan_loss=gan.detach(), gan_weight=weight.detach())

        if output.prior_loss is not None:
            total = total + h.prior_weight * output.prior_loss
            logs.update(
                prior_loss=output.prior_loss.detach(),
                prior_top1=output.prior_top1_accuracy,
                prior_top5=output.prior_top5_accuracy,
            )
        logs["loss"] = total.detach()
        return total, logs

    def _discriminator_step(self, optimizer, video: torch.Tensor, reconstruction: torch.Tensor, step: int):
        loss, logs = self.adversarial.discriminator_loss(video, reconstruction, self.sampling_generator)
        logs, _ = reduce_over_ranks(self.trainer.strategy, logs)
        check_finite(logs["disc_loss"], logs, step, "discriminator")
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        # The strategy runs the precision plugin (loss-scale unscaling, on_before_optimizer_step)
        # without counting a global step; see the module docstring.
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure, model=self)
        return logs

    def on_before_optimizer_step(self, optimizer) -> None:
        """Record each optimizer's gradient norm and clip it; under fp16 this runs after unscaling.

        Under FSDP the recorded norm is that of this rank's shard.
        """
        gradients = [_local(p.grad.detach()) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradients:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in gradients]))
            name = "disc_grad_norm" if optimizer.param_groups[0]["name"] == "discriminator" else "grad_norm"
            self.gradient_norms[name] = norm
        clip = self.hparams.gradient_clip_norm
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def _log_step(self, logs: dict[str, torch.Tensor], optimizers, step: int, batch_size: int) -> None:
        logs.update(learning_rate_logs(optimizers))
        logs.update(self.gradient_norms)
        self.gradient_norms = {}
        logs["tokenizer_step"] = torch.tensor(float(step))
        if self.tokenizer.prior is not None:
            logs["scheduled_sampling_ratio"] = torch.tensor(self.tokenizer.prior_sampling_ratio(step, self.total_steps))
        logs["ema_decay"] = torch.tensor(self.ema.current_decay() if self.ema is not None else 0.0)
        self.log_dict({f"train/{name}": value for name, value in logs.items()}, batch_size=batch_size)
        self.log("loss", logs["loss"], prog_bar=True, logger=False, batch_size=batch_size)
        self.log("l1", logs["l1"], prog_bar=True, logger=False, batch_size=batch_size)

    # ----------------------------------------------------------------------------------------
    # Validation
    # ----------------------------------------------------------------------------------------

    def validation_step(self, batch, batch_index):
        video = batch["video"]
        models = {"val": self.tokenizer}
        if self.ema is not None:
            models["val_ema"] = self.ema.model
        for prefix, model in models.items():
            reconstruction, metrics = self.reconstruction_metrics(model, video)
            self.log_dict(
                {f"{prefix}/{name}": value for name, value in metrics.items()},
                prog_bar=prefix == "val",
                batch_size=video.shape[0],
                sync_dist=True,
            )
        if batch_index == 0 and self.hparams.preview_every_n_steps:
            self.preview_inputs["val"] = (self.tokenizer_step, video, reconstruction)

    @torch.no_grad()
    def reconstruction_metrics(self, model: LARPTokenizer, video: torch.Tensor):
        """Return the deterministic reconstruction in [0, 1] and its L1, PSNR and LPIPS."""
        reconstruction = model.decode_codes(model.encode(video).codes).float().clamp(0, 1)
        metrics = {
            "l1": F.l1_loss(reconstruction, video.float()),
            "psnr": clip_psnr(reconstruction, video).mean(),
        }
        if self.lpips is not None:
            from larp_video.evaluation.lpips import video_lpips

            metrics["lpips"] = video_lpips(self.lpips, video, reconstruction).mean()
        return reconstruction, metrics


def _no_closure() -> None:
    return None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """Return this rank's shard of an FSDP2 gradient (a DTensor), or any other tensor unchanged."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor
