"""LightningModule that trains the autoregressive generator on pre-extracted tokens.

The loss is the generator's cross-entropy over all N tokens of a clip; label dropout for
classifier-free guidance happens inside the model in training mode. Mixed precision and DDP
come from the Trainer (``trainer.precision``, ``trainer.strategy``); FSDP comes from
``ModelParallelStrategy``, under which ``configure_model`` shards the generator. Checkpoints carry the
generator config (``generator_config``) and, when the data module provides them, the token
settings and class names, so ``larp sample --generator run/checkpoints/last.ckpt`` can load them.

Each rank seeds its random generators from the run's seed and its rank, so ranks draw different
dropout masks, and checkpoints carry every rank's random state (``rng_states``). A resumed run
continues the random draws of the interrupted one.
"""

from __future__ import annotations

import logging
import math
import os

import lightning as L
import torch

from larp_video.config import ConfigError
from larp_video.models.generator import GeneratorConfig, LARPGenerator
from larp_video.training.rng import gather_rng_states, restore_or_reseed, seed_rank
from larp_video.training.schedules import warmup_cosine, warmup_steps_from_epochs
from larp_video.training.sharding import check_strategy, shard_models
from larp_video.training.tokenizer_module import check_finite

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)


class GeneratorTrainingModule(L.LightningModule):
    """Train ``LARPGenerator`` on batches ``{"tokens": (B, N), "label": (B,)[, "condition": (B, N)]}``.

    Args:
        generator: generator config (size, mode, vocabulary, tokens per clip, classes). Fields
            that a config file leaves out take the ``GeneratorConfig`` defaults (the "L" size).
        learning_rate: AdamW peak learning rate (6e-4 in LARP).
        betas: AdamW betas.
        weight_decay: AdamW weight decay, applied to Linear weights only.
        warmup_steps: linear warm-up length in optimizer steps (used when warmup_epochs is 0).
        warmup_epochs: warm-up length in epochs; converted to steps at the start of training.
        warmup_start_ratio: learning-rate multiplier at step 0.
        final_lr_ratio: learning-rate multiplier at the end of the cosine (0.01 in LARP).
    """

    def __init__(
        self,
        generator: GeneratorConfig = GeneratorConfig(),
        learning_rate: float = 6e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        warmup_start_ratio: float = 0.01,
        final_lr_ratio: float = 0.01,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["generator"])
        self.generator_config = generator
        self.generator = LARPGenerator(generator)
        self.token_settings: dict | None = None
        self.class_names: dict[int, str] = {}
        self.base_seed = 0
        # Unused in training, but rng_states has a "sampling" entry, as in tokenizer checkpoints.
        self.sampling_generator: torch.Generator | None = None
        self._pending_rng_states: list | None = None

    # ----------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        check_strategy(self.trainer.strategy, "generator")
        dataset = getattr(self.trainer.datamodule, "train_dataset", None)
        if dataset is None:
            return
        check_tokens_fit(self.generator_config, dataset)
        self.token_settings = dict(dataset.settings)
        self.class_names = dict(dataset.class_names)

    def on_fit_start(self) -> None:
        self.base_seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.sampling_generator = seed_rank(self.base_seed, self.global_rank, self.device)

    def on_train_start(self) -> None:
        # Lightning has restored the checkpoint by now, and the first batch is still to come.
        states, self._pending_rng_states = self._pending_rng_states, None
        self.sampling_generator = restore_or_reseed(
            states, self.trainer.world_size, self.global_rank, self.sampling_generator, self.base_seed, self.global_step
        )

    def configure_model(self) -> None:
        """Shard the generator with FSDP2 (one unit per block, then the root).

        Only ``ModelParallelStrategy`` provides a device mesh; under the other strategies this
        does nothing. See ``larp_video.training.sharding``.
        """
        shard_models(self.device_mesh, [(self.generator, ())])

    @property
    def total_steps(self) -> int:
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self):
        h = self.hparams
        groups = self.generator.optimizer_groups(h.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=h.learning_rate, betas=tuple(h.betas))
        total = self.total_steps
        warmup = warmup_steps_from_epochs(h.warmup_steps, h.warmup_epochs, total, self.trainer.max_epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, h.warmup_start_ratio, h.final_lr_ratio)
        )
        return [optimizer], [{"scheduler": schedule, "interval": "step"}]

    # ----------------------------------------------------------------------------------------
    # Steps
    # ----------------------------------------------------------------------------------------

    def condition_of(self, batch: dict) -> torch.Tensor:
        if self.generator_config.frame_prediction:
            if "condition" not in batch:
                raise ConfigError(
                    "the generator is in frame_prediction mode but the tokens have no conditioning codes; "
                    "tokenize the data with --frame-prediction"
                )
            return batch["condition"]
        return batch["label"]

    def compute_metrics(self, batch: dict) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        output = self.generator(tokens, self.condition_of(batch))
        with torch.no_grad():
            logits = output.logits.detach().float()  # (B, N, K)
            top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (B, N, 5)
            top1_accuracy = (top5[..., 0] == tokens).float().mean()
            top5_accuracy = (top5 == tokens[..., None]).any(-1).float().mean()
        return {
            "loss": output.loss,
            "bits_per_token": output.loss.detach() / LN2,
            "top1_accuracy": top1_accuracy,
            "top5_accuracy": top5_accuracy,
        }

    def training_step(self, batch, batch_index):
        metrics = self.compute_metrics(batch)
        loss = metrics["loss"]
        check_finite(loss, {"loss": loss.detach()}, self.global_step)
        size = batch["tokens"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in metrics.items()}, batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=size)
        return loss

    def validation_step(self, batch, batch_index):
        metrics = self.compute_metrics(batch)
        size = batch["tokens"].shape[0]
        self.log_dict({f"val/{k}": v.detach() for k, v in metrics.items()}, batch_size=size, sync_dist=True)
        self.log("val_bits", metrics["bits_per_token"], prog_bar=True, logger=False, batch_size=size, sync_dist=True)

    # ----------------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["generator_config"] = self.generator_config.to_dict()
        if self.token_settings is not None:
            checkpoint["token_settings"] = self.token_settings
        checkpoint["class_names"] = {str(label): name for label, name in self.class_names.items()}
        if self.sampling_generator is not None:
            # A collective under DDP: Lightning calls this hook on every rank.
            checkpoint["rng_states"] = gather_rng_states(self.sampling_generator)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.token_settings = checkpoint.get("token_settings", self.token_settings)
        names = checkpoint.get("class_names") or {}
        self.class_names = {int(label): name for label, name in names.items()} or self.class_names
        self._pending_rng_states = checkpoint.get("rng_states")


def check_tokens_fit(config: GeneratorConfig, dataset) -> None:
    """Raise ``ConfigError`` when the token data does not fit the generator config."""
    problems = []
    if dataset.codebook_size != config.vocab_size:
        problems.append(f"codebook size {dataset.codebook_size} but generator.vocab_size {config.vocab_size}")
    if dataset.num_tokens != config.num_tokens:
        problems.append(f"{dataset.num_tokens} tokens per clip but generator.num_tokens {config.num_tokens}")
    if config.frame_prediction and not dataset.frame_prediction:
        problems.append("no conditioning codes but generator.mode frame_prediction (tokenize with --frame-prediction)")
    if not config.frame_prediction and dataset.num_classes > config.num_classes:
        problems.append(f"labels up to {dataset.num_classes - 1} but generator.num_classes {config.num_classes}")
    if problems:
        raise ConfigError(
            f"the tokens in {', '.join(str(d) for d in dataset.directories)} do not fit the generator: "
            f"{'; '.join(problems)}; set --model.generator.* to match"
        )
