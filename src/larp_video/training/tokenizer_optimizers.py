"""Adam optimizers of tokenizer training and their per-step learning rates.

Parameter groups carry a ``name``: "tokenizer" (encoder, quantizer, decoder), "prior" and
"discriminator". Learning rates are set from the group's base rate and the schedule factor
before every step, so they follow the restored step counter on resume.
"""

from __future__ import annotations

import torch
from torch import nn


def build_optimizers(
    tokenizer: nn.Module,
    discriminator: nn.Module | None,
    base_rates: dict[str, float],
    betas: tuple[float, float],
    weight_decay: float,
    discriminator_betas: tuple[float, float],
) -> list[torch.optim.Adam]:
    """Return [tokenizer + prior Adam] plus a discriminator Adam when ``discriminator`` is given."""
    prior = getattr(tokenizer, "prior", None)
    prior_ids = {id(p) for p in prior.parameters()} if prior is not None else set()
    groups = [{"name": "tokenizer", "params": [p for p in tokenizer.parameters() if id(p) not in prior_ids]}]
    if prior is not None:
        groups.append({"name": "prior", "params": list(prior.parameters())})
    for group in groups:
        group["lr"] = base_rates[group["name"]]
    optimizers = [torch.optim.Adam(groups, betas=tuple(betas), weight_decay=weight_decay)]

    if discriminator is not None:
        group = {"name": "discriminator", "params": list(discriminator.parameters()), "lr": base_rates["discriminator"]}
        optimizers.append(torch.optim.Adam([group], betas=tuple(discriminator_betas)))
    return optimizers


def set_learning_rates(optimizers, base_rates: dict[str, float], factor: float) -> None:
    """Set every group's learning rate to its base rate times ``factor``."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = base_rates[group["name"]] * factor


LOG_NAMES = {"tokenizer": "lr", "prior": "lr_prior", "discriminator": "lr_discriminator"}


def learning_rate_logs(optimizers) -> dict[str, torch.Tensor]:
    """Return the current learning rate of each named group, keyed "lr", "lr_prior", "lr_discriminator"."""
    return {
        LOG_NAMES[group["name"]]: torch.tensor(group["lr"]) for optimizer in optimizers for group in optimizer.param_groups
    }
