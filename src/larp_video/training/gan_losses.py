"""Adversarial losses of the tokenizer training recipe.

The reference implementation (hywang66/LARP) trains its tokenizer against a video discriminator
with a non-saturating GAN loss. The discriminator's loss is binary cross-entropy against
noisy one-sided smoothed labels plus a LeCam regulariser, and the generator's GAN term has a fixed
weight of 0.3. That weight, the GAN start step and the discriminator update interval (every
5th step) belong to the training loop. This module contains the losses themselves.

All losses are computed in float32, whatever the dtype of the logits, so they can be called
inside a bf16 autocast region.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the non-saturating generator loss mean(-log sigmoid(D(fake))) as a float32 scalar.

    A logit of 0 gives log 2. The loss falls towards 0 as the discriminator calls the fakes
    real, and its gradient does not vanish while the discriminator rejects them.
    """
    _check_logits("fake_logits", fake_logits)
    return -F.logsigmoid(fake_logits.float()).mean()


@dataclasses.dataclass(frozen=True)
class DiscriminatorLossOutput:
    """Discriminator loss and its parts. ``total`` is what the optimiser steps on."""

    # real + fake, a float32 scalar.
    total: torch.Tensor
    # Mean binary cross-entropy of the real logits against ``real_targets``.
    real: torch.Tensor
    # Mean binary cross-entropy of the fake logits against ``fake_targets``.
    fake: torch.Tensor
    # Smoothed labels drawn for this call, float32, shaped like the logits, without gradient.
    real_targets: torch.Tensor
    fake_targets: torch.Tensor


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    label_noise_scale: float = 0.15,
    real_target_floor: float = 0.7,
    fake_target_cap: float = 0.3,
) -> DiscriminatorLossOutput:
    """Compute binary cross-entropy with one-sided-noise label smoothing, as the reference does.

    Every logit gets its own label, so logits of shape (B,) get one label per clip:
        real target = max(1 - |n| * label_noise_scale, real_target_floor)
        fake target = min(|n'| * label_noise_scale, fake_target_cap)
    with n, n' ~ N(0, 1) drawn fresh on each call. The real labels are drawn first, then the
    fake labels, from ``generator`` when one is given (it must be on the logits' device) and
    from the global RNG otherwise. The loss is mean BCE(real) + mean BCE(fake).
    """
    _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)
    if not 0.0 <= fake_target_cap <= 0.5 <= real_target_floor <= 1.0:
        raise ValueError(
            f"label bounds need 0 <= fake_target_cap <= 0.5 <= real_target_floor <= 1, got "
            f"fake_target_cap={fake_target_cap} and real_target_floor={real_target_floor}"
        )

    real_noise = _standard_normal(real_logits, generator).abs()
    fake_noise = _standard_normal(fake_logits, generator).abs()
    real_targets = (1.0 - real_noise * label_noise_scale).clamp(min=real_target_floor)
    fake_targets = (fake_noise * label_noise_scale).clamp(max=fake_target_cap)

    real = F.binary_cross_entropy_with_logits(real_logits.float(), real_targets)
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), fake_targets)
    return DiscriminatorLossOutput(
        total=real + fake, real=real, fake=fake, real_targets=real_targets, fake_targets=fake_targets
    )


class LeCamRegularizer(nn.Module):
    """LeCam regulariser (Tseng et al. 2021, arXiv 2104.03310) on the discriminator's mean logits.

    With r and f the batch means of the real and fake logits and ema_r, ema_f their moving
    averages, the penalty is
        weight * (relu(r - ema_f) ** 2 + relu(ema_r - f) ** 2).
    This is the reference's form, which applies the penalty to batch means rather than to each
    logit. The penalty uses the averages from before this call. A call in training mode then
    updates them: ema <- decay * ema + (1 - decay) * mean. Both averages start at 0 and are
    float32 buffers, so they are saved in checkpoints and follow ``.to(device)``.

    ``weight`` defaults to 1e-6, the effective weight of the reference: its config sets 0.001,
    and its code multiplies the penalty by that weight twice. Call this only on the steps that
    update the discriminator, as the reference does.

    Under torch.distributed, the update averages the batch means over all ranks with an
    all-reduce, so every rank keeps the same averages. That makes each training-mode call a
    collective: all ranks must call it on the same steps. The average of per-rank means is the
    global mean when every rank has the same batch size. The penalty itself uses the local
    means, and DDP averages its gradients. Calls in eval mode update nothing and communicate
    nothing.
    """

    ema_real: torch.Tensor
    ema_fake: torch.Tensor

    def __init__(self, weight: float = 1e-6, decay: float = 0.999):
        super().__init__()
        if weight < 0.0:
            raise ValueError(f"LeCam weight must be >= 0, got {weight}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam EMA decay must be in [0, 1), got {decay}")
        self.weight = weight
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros((), dtype=torch.float32))
        self.register_buffer("ema_fake", torch.zeros((), dtype=torch.float32))

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Return the weighted penalty as a float32 scalar, then update the averages if training."""
        _check_logits("real_logits", real_logits)
        _check_logits("fake_logits", fake_logits)
        real_mean = real_logits.float().mean()
        fake_mean = fake_logits.float().mean()

        penalty = F.relu(real_mean - self.ema_fake).square() + F.relu(self.ema_real - fake_mean).square()
        loss = self.weight * penalty

        if self.training:
            self.update_ema(real_mean.detach(), fake_mean.detach())
        return loss

    @torch.no_grad()
    def update_ema(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> None:
        """Move the averages towards the given batch means, averaged over ranks under DDP."""
        means = torch.stack([real_mean.float(), fake_mean.float()]).to(self.ema_real.device)  # (2,)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(means, op=dist.ReduceOp.SUM)
            means = means / dist.get_world_size()

        self.ema_real.mul_(self.decay).add_(means[0], alpha=1.0 - self.decay)
        self.ema_fake.mul_(self.decay).add_(means[1], alpha=1.0 - self.decay)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, decay={self.decay}"


def adaptive_gan_weight(
    reconstruction_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer_weight: torch.Tensor,
    *,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Return the VQGAN adaptive weight ||grad rec|| / (||grad gan|| + eps), clamped to [0, max_weight].

    Both gradients are taken with respect to ``last_layer_weight``, usually the weight of the
    decoder's output layer, and the graph is kept for the caller's backward pass. The result
    is detached, and the caller multiplies it by its GAN weight. ``max_weight`` and ``eps``
    default to the values of taming-transformers' VQGAN loss. This weighting is optional: the
    reference LARP recipe uses a fixed GAN weight of 0.3 instead.
    """
    if max_weight < 0.0:
        raise ValueError(f"max_weight must be >= 0, got {max_weight}")
    if not last_layer_weight.requires_grad:
        raise ValueError(
            "last_layer_weight does not require grad; pass the trainable weight of the layer "
            "that produces the reconstruction"
        )

    (reconstruction_grad,) = torch.autograd.grad(reconstruction_loss, last_layer_weight, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer_weight, retain_graph=True)

    ratio = reconstruction_grad.float().norm() / (gan_grad.float().norm() + eps)
    return ratio.clamp(0.0, max_weight).detach()


def _standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32)


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of discriminator logits, got dtype {logits.dtype}")
    if logits.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(logits.shape)}); pass at least one logit")
