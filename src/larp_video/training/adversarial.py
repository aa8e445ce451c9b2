"""The adversarial part of tokenizer training: a video discriminator and its losses.

``AdversarialLoss`` owns the discriminator and the LeCam averages, so both are saved in the
training checkpoint. The training module decides when each loss runs (the GAN start step and
the discriminator's update interval) and steps the optimizers.
"""

from __future__ import annotations

import torch
from torch import nn

from larp_video.models.discriminator import DiscriminatorConfig, VideoDiscriminator
from larp_video.training.gan_losses import LeCamRegularizer, discriminator_loss, generator_adversarial_loss


class AdversarialLoss(nn.Module):
    """Discriminator losses (smoothed BCE + LeCam) and the generator's non-saturating loss.

    Args:
        config: discriminator sizes; its clip must equal the tokenizer's.
        label_noise: scale of the one-sided label noise; 0 gives hard labels 1 and 0.
        lecam_weight: weight of the LeCam penalty; 0 disables it.
        lecam_decay: decay of the LeCam moving averages.
    """

    def __init__(
        self,
        config: DiscriminatorConfig,
        label_noise: float = 0.15,
        lecam_weight: float = 1e-6,
        lecam_decay: float = 0.999,
    ):
        super().__init__()
        if label_noise < 0:
            raise ValueError(f"label_noise must be >= 0, got {label_noise}")
        self.discriminator = VideoDiscriminator(config)
        self.label_noise = label_noise
        self.lecam = LeCamRegularizer(lecam_weight, lecam_decay) if lecam_weight > 0 else None

    def discriminator_loss(
        self, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the discriminator's loss on real and (detached) reconstructed clips, and logs.

        Under torch.distributed the LeCam update is a collective, so every rank must call this
        on the same steps.
        """
        self.discriminator.requires_grad_(True)
        real_logits = self.discriminator(real)  # (B,)
        fake_logits = self.discriminator(fake.detach())  # (B,)
        losses = discriminator_loss(real_logits, fake_logits, generator, label_noise_scale=self.label_noise)
        total = losses.total
        logs = {
            "disc_loss": losses.total.detach(),
            "disc_real_loss": losses.real.detach(),
            "disc_fake_loss": losses.fake.detach(),
            "disc_accuracy": discriminator_accuracy(real_logits.detach(), fake_logits.detach()),
            "disc_real_logit": real_logits.detach().float().mean(),
            "disc_fake_logit": fake_logits.detach().float().mean(),
        }
        if self.lecam is not None:
            penalty = self.lecam(real_logits, fake_logits)
            total = total + penalty
            logs["lecam_penalty"] = penalty.detach()
        return total, logs

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Return the non-saturating loss of reconstructed clips; the discriminator stays fixed.

        The discriminator's parameters stop requiring gradients, so this backward pass leaves
        them alone and DDP treats them as unused.
        """
        self.discriminator.requires_grad_(False)
        return generator_adversarial_loss(self.discriminator(fake))


def discriminator_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the fraction of clips classified correctly: real logits > 0, fake logits < 0."""
    correct = torch.cat([real_logits > 0, fake_logits < 0])
    return correct.float().mean()
