"""Exponential moving average (EMA) of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    """A frozen copy of ``model`` whose weights follow ``ema <- d * ema + (1 - d) * weights``.

    The decay warms up as ``d = min(decay, (1 + n) / (10 + n))`` after n updates, the schedule
    of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``. The average then tracks
    the weights early in training instead of staying near the initialisation. With decay 0.9999
    and no warm-up, the initial weights would still make up about 80% of the average after
    2000 steps. Buffers are copied, not averaged.

    The copy is not a submodule of any LightningModule, so DDP neither broadcasts nor reduces
    it, and Lightning does not move it: call ``to(device)``. Its weights are float32 whatever
    the dtype of the model's.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}; use e.g. 0.9999, or None to disable EMA")
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "ExponentialMovingAverage":
        self.model.to(device)
        return self

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the current weights of ``model`` (same architecture)."""
        decay = self.current_decay()
        averaged = dict(self.model.named_parameters())
        for name, parameter in model.named_parameters():
            target = averaged[name]
            target.lerp_(parameter.detach().to(target.device, target.dtype), 1.0 - decay)
        copies = dict(self.model.named_buffers())
        for name, buffer in model.named_buffers():
            copies[name].copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the averaged model's state dict, on the CPU."""
        return {name: tensor.detach().cpu().clone() for name, tensor in self.model.state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.num_updates = num_updates
