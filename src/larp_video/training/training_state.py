"""Training state that tokenizer checkpoints carry beyond weights, optimizers and loop counters."""

from __future__ import annotations

import logging

import torch

from larp_video.training.rng import gather_rng_states, restore_or_reseed

logger = logging.getLogger(__name__)


class CheckpointedTrainingState:
    """Mixin of ``TokenizerTrainingModule`` that saves and restores its own training state.

    Checkpoint keys: ``tokenizer_config`` and ``discriminator_config`` (dicts), ``tokenizer_step``,
    ``ema_state_dict`` (the EMA tokenizer, loadable with ``LARPTokenizer.load_state_dict``) and
    ``ema_updates``, and ``rng_states`` (one dict per rank). The random states are restored in
    ``on_train_start``, after Lightning has restored everything else and before the first batch.
    """

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokenizer_config"] = self.model_config.to_dict()
        checkpoint["tokenizer_step"] = self.tokenizer_step
        if self.discriminator_config is not None:
            checkpoint["discriminator_config"] = self.discriminator_config.to_dict()
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.state_dict()
            checkpoint["ema_updates"] = self.ema.num_updates
        if self.sampling_generator is not None:
            # A collective under DDP: Lightning calls this hook on every rank.
            checkpoint["rng_states"] = gather_rng_states(self.sampling_generator)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokenizer_step = int(checkpoint.get("tokenizer_step", checkpoint.get("global_step", 0)))
        if self.ema is not None:
            if "ema_state_dict" in checkpoint:
                self.ema.load_state_dict(checkpoint["ema_state_dict"], int(checkpoint.get("ema_updates", 0)))
            else:
                logger.warning("the checkpoint has no EMA weights; the EMA restarts from the loaded weights")
                self.ema.model.load_state_dict(_prefixed(checkpoint["state_dict"], "tokenizer."))
        self._pending_rng_states = checkpoint.get("rng_states")

    def restore_rng_states(self) -> None:
        """Apply the random states of a loaded checkpoint to this rank, once."""
        states, self._pending_rng_states = self._pending_rng_states, None
        self.sampling_generator = restore_or_reseed(
            states, self.trainer.world_size, self.global_rank, self.sampling_generator, self.base_seed, self.tokenizer_step
        )


def _prefixed(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
