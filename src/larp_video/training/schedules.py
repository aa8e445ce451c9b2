"""Learning-rate schedules, as multipliers of the base rate per optimizer step."""

from __future__ import annotations

import math


def warmup_steps_from_epochs(warmup_steps: int, warmup_epochs: float, total_steps: int, max_epochs: int | None) -> int:
    """Return the warm-up length in steps: ``warmup_epochs`` converted with the run's steps per
    epoch when it is positive, else ``warmup_steps``."""
    if warmup_epochs > 0:
        steps_per_epoch = total_steps / max(1, max_epochs or 1)
        return int(round(warmup_epochs * steps_per_epoch))
    return int(warmup_steps)


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    start_ratio: float = 0.01,
    end_ratio: float = 0.01,
) -> float:
    """Return the multiplier at ``step``: linear from ``start_ratio`` to 1 over ``warmup_steps``,
    then a cosine from 1 down to ``end_ratio`` at ``total_steps`` (constant after)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < warmup_steps:
        return start_ratio + (1.0 - start_ratio) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return end_ratio + (1.0 - end_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
