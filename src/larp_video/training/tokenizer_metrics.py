"""Reconstruction and codebook metrics logged during tokenizer training."""

from __future__ import annotations

import math

import torch


def codebook_statistics(code_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (usage, perplexity) of (K,) code counts.

    Usage is the fraction of the K codes chosen at least once. Perplexity is exp of the entropy
    of the empirical code distribution, between 1 (one code) and K (all codes equally often).
    Under DDP, pass the counts summed over ranks so both describe the global batch.
    """
    counts = code_counts.double()
    total = counts.sum().clamp_min(1.0)
    probabilities = counts / total
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-30))).sum()
    usage = (counts > 0).double().mean()
    return usage.float(), entropy.exp().float()


def reduce_over_ranks(
    strategy, logs: dict[str, torch.Tensor], code_counts: torch.Tensor | None = None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Average scalar logs and sum code counts over ranks in one all-reduce.

    ``strategy`` is the Lightning strategy; with one process the values come back unchanged.
    Every rank gets the same numbers, so checks on them stop all ranks together.
    """
    world_size = strategy.world_size
    if world_size == 1:
        return logs, code_counts
    names = list(logs)
    device = strategy.root_device
    parts = [torch.stack([logs[name].detach().float().to(device) for name in names])]
    if code_counts is not None:
        parts.append(code_counts.float().to(device))
    summed = strategy.reduce(torch.cat(parts), reduce_op="sum")
    means = summed[: len(names)] / world_size
    counts = summed[len(names) :] if code_counts is not None else None
    return dict(zip(names, means.unbind())), counts


def clip_psnr(reconstruction: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Return the (B,) PSNR in dB of (B, C, T, H, W) clips in [0, 1], one MSE per clip."""
    mse = (reconstruction.float() - video.float()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def check_finite(loss: torch.Tensor, logs: dict[str, torch.Tensor], step: int, name: str = "training") -> None:
    """Raise ``FloatingPointError`` naming the step and the non-finite terms of a loss."""
    if torch.isfinite(loss):
        return
    bad = {key: float(value) for key, value in logs.items() if not math.isfinite(float(value))}
    raise FloatingPointError(
        f"non-finite {name} loss at tokenizer step {step}: {bad or float(loss)}; lower the learning rate, "
        "enable gradient clipping (model.gradient_clip_norm), or resume from an earlier checkpoint"
    )
