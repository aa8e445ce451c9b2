"""Tests of the GAN losses: generator loss, smoothed discriminator BCE, LeCam, adaptive weight."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from larp_video.training.gan_losses import (
    LeCamRegularizer,
    adaptive_gan_weight,
    discriminator_loss,
    generator_adversarial_loss,
)

LOG_2 = math.log(2.0)


def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probabilities = torch.sigmoid(logits.double())
    targets = targets.double()
    return -(targets * probabilities.log() + (1 - targets) * (1 - probabilities).log()).mean()


# ---------------------------------------------------------------------------------------------
# generator_adversarial_loss
# ---------------------------------------------------------------------------------------------


def test_generator_loss_zero_logits_is_log2():
    loss = generator_adversarial_loss(torch.zeros(5))

    assert loss.item() == pytest.approx(LOG_2)


def test_generator_loss_matches_formula():
    logits = torch.tensor([-3.0, -0.5, 0.0, 2.0])

    loss = generator_adversarial_loss(logits)

    expected = -torch.log(torch.sigmoid(logits.double())).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_generator_loss_large_logits_near_zero():
    loss = generator_adversarial_loss(torch.full((4,), 30.0))

    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_generator_loss_does_not_saturate():
    logits = torch.full((4,), -30.0, requires_grad=True)

    generator_adversarial_loss(logits).backward()

    # d/dx -log sigmoid(x) = sigmoid(x) - 1, which is -1 for very negative x. The mean divides by 4.
    torch.testing.assert_close(logits.grad, torch.full((4,), -0.25))


# ---------------------------------------------------------------------------------------------
# discriminator_loss
# ---------------------------------------------------------------------------------------------


def test_discriminator_loss_zero_logits_is_two_log2():
    output = discriminator_loss(torch.zeros(8), torch.zeros(8))

    # BCE at logit 0 is log 2 for every target.
    assert output.total.item() == pytest.approx(2 * LOG_2, rel=1e-6)
    assert output.real.item() == pytest.approx(LOG_2, rel=1e-6)
    assert output.fake.item() == pytest.approx(LOG_2, rel=1e-6)


def test_discriminator_loss_total_is_sum():
    output = discriminator_loss(torch.randn(6), torch.randn(6))

    torch.testing.assert_close(output.total, output.real + output.fake)


def test_smoothed_targets_stay_in_ranges():
    output = discriminator_loss(torch.zeros(200_000), torch.zeros(200_000))

    assert output.real_targets.min() >= 0.7
    assert output.real_targets.max() <= 1.0
    assert output.fake_targets.min() >= 0.0
    assert output.fake_targets.max() <= 0.3


def test_smoothed_targets_hit_floor_and_cap():
    output = discriminator_loss(torch.zeros(200_000), torch.zeros(200_000))

    # |N(0, 1)| * 0.15 passes 0.3 when |n| > 2, about 4.6% of draws.
    real_floor_share = (output.real_targets == 0.7).float().mean().item()
    fake_cap_share = (output.fake_targets == 0.3).float().mean().item()
    assert real_floor_share == pytest.approx(0.0455, abs=0.005)
    assert fake_cap_share == pytest.approx(0.0455, abs=0.005)


def test_smoothed_targets_match_formula_with_seed():
    real_logits = torch.randn(16)
    fake_logits = torch.randn(16)

    output = discriminator_loss(real_logits, fake_logits, torch.Generator().manual_seed(7))

    replay = torch.Generator().manual_seed(7)
    real_noise = torch.randn(16, generator=replay).abs()
    fake_noise = torch.randn(16, generator=replay).abs()
    expected_real = torch.clamp(1 - real_noise * 0.15, min=0.7)
    expected_fake = torch.clamp(fake_noise * 0.15, max=0.3)
    torch.testing.assert_close(output.real_targets, expected_real)
    torch.testing.assert_close(output.fake_targets, expected_fake)
    assert output.real.item() == pytest.approx(_bce(real_logits, expected_real).item(), rel=1e-5)
    assert output.fake.item() == pytest.approx(_bce(fake_logits, expected_fake).item(), rel=1e-5)


def test_smoothed_targets_one_per_sample():
    output = discriminator_loss(torch.zeros(32), torch.zeros(32))

    assert output.real_targets.shape == (32,)
    assert output.fake_targets.shape == (32,)
    assert output.real_targets.unique().numel() > 16
    assert output.fake_targets.unique().numel() > 16


def test_smoothing_coefficients_are_arguments():
    output = discriminator_loss(
        torch.zeros(1000),
        torch.zeros(1000),
        label_noise_scale=0.0,
        real_target_floor=0.9,
        fake_target_cap=0.1,
    )

    assert torch.equal(output.real_targets, torch.ones(1000))
    assert torch.equal(output.fake_targets, torch.zeros(1000))


def test_discriminator_loss_targets_detached():
    real_logits = torch.randn(4, requires_grad=True)
    fake_logits = torch.randn(4, requires_grad=True)

    output = discriminator_loss(real_logits, fake_logits)
    output.total.backward()

    assert not output.real_targets.requires_grad
    assert real_logits.grad is not None
    assert fake_logits.grad is not None


def test_discriminator_loss_invalid_bounds_raise():
    with pytest.raises(ValueError, match="real_target_floor"):
        discriminator_loss(torch.zeros(2), torch.zeros(2), real_target_floor=0.2)


def test_discriminator_loss_empty_logits_raise():
    with pytest.raises(ValueError, match="empty"):
        discriminator_loss(torch.zeros(0), torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# LeCamRegularizer
# ---------------------------------------------------------------------------------------------


def test_lecam_defaults():
    regularizer = LeCamRegularizer()

    assert regularizer.weight == 1e-6
    assert regularizer.decay == 0.999


def test_lecam_first_call_uses_zero_ema():
    regularizer = LeCamRegularizer(weight=1.0)
    real_logits = torch.tensor([1.0, 3.0])  # mean 2
    fake_logits = torch.tensor([-4.0, -2.0])  # mean -3

    loss = regularizer(real_logits, fake_logits)

    # relu(2 - 0) ** 2 + relu(0 - (-3)) ** 2
    assert loss.item() == pytest.approx(13.0)


def test_lecam_ema_update_math():
    regularizer = LeCamRegularizer(weight=1.0, decay=0.9)

    regularizer(torch.tensor([2.0]), torch.tensor([-3.0]))
    first_real, first_fake = regularizer.ema_real.item(), regularizer.ema_fake.item()
    regularizer(torch.tensor([4.0]), torch.tensor([1.0]))

    assert first_real == pytest.approx(0.2)
    assert first_fake == pytest.approx(-0.3)
    assert regularizer.ema_real.item() == pytest.approx(0.9 * 0.2 + 0.1 * 4.0)
    assert regularizer.ema_fake.item() == pytest.approx(0.9 * -0.3 + 0.1 * 1.0)


def test_lecam_penalty_uses_previous_ema():
    regularizer = LeCamRegularizer(weight=0.5, decay=0.9)
    regularizer.ema_real.fill_(1.0)
    regularizer.ema_fake.fill_(0.5)

    loss = regularizer(torch.tensor([3.0]), torch.tensor([-1.0]))

    # 0.5 * (relu(3 - 0.5) ** 2 + relu(1 - (-1)) ** 2)
    assert loss.item() == pytest.approx(0.5 * (2.5**2 + 2.0**2))


def test_lecam_penalty_zero_inside_margin():
    regularizer = LeCamRegularizer(weight=1.0)
    regularizer.ema_real.fill_(1.0)
    regularizer.ema_fake.fill_(-1.0)

    loss = regularizer(torch.tensor([-2.0]), torch.tensor([2.0]))

    assert loss.item() == 0.0


def test_lecam_eval_mode_keeps_ema():
    regularizer = LeCamRegularizer().eval()

    regularizer(torch.tensor([2.0]), torch.tensor([-3.0]))

    assert regularizer.ema_real.item() == 0.0
    assert regularizer.ema_fake.item() == 0.0


def test_lecam_buffers_in_state_dict():
    regularizer = LeCamRegularizer(decay=0.5)
    regularizer(torch.tensor([2.0]), torch.tensor([-4.0]))

    restored = LeCamRegularizer()
    restored.load_state_dict(regularizer.state_dict())

    assert set(regularizer.state_dict()) == {"ema_real", "ema_fake"}
    assert restored.ema_real.item() == pytest.approx(1.0)
    assert restored.ema_fake.item() == pytest.approx(-2.0)


def test_lecam_gradient_reaches_logits():
    regularizer = LeCamRegularizer(weight=1.0)
    real_logits = torch.tensor([1.0, 3.0], requires_grad=True)
    fake_logits = torch.tensor([-1.0, -1.0], requires_grad=True)

    regularizer(real_logits, fake_logits).backward()

    # d/dr relu(r - 0) ** 2 = 2r = 4 and d/df relu(0 - f) ** 2 = 2f = -2, each split over 2 logits.
    torch.testing.assert_close(real_logits.grad, torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(fake_logits.grad, torch.tensor([-1.0, -1.0]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lecam_rank(rank: int, world_size: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        regularizer = LeCamRegularizer(decay=0.5)
        real_logits = torch.tensor([float(rank)]) * 4.0  # rank 0: 0, rank 1: 4
        fake_logits = torch.tensor([float(rank)]) * -2.0  # rank 0: 0, rank 1: -2
        regularizer(real_logits, fake_logits)
        results[rank] = (regularizer.ema_real.item(), regularizer.ema_fake.item())
    finally:
        dist.destroy_process_group()


def test_lecam_ema_averaged_across_ranks():
    world_size = 2
    manager = mp.Manager()
    results = manager.dict()

    mp.spawn(_lecam_rank, args=(world_size, _free_port(), results), nprocs=world_size)

    # The global means are real 2 and fake -1, and one update with decay 0.5 halves them.
    assert results[0] == pytest.approx((1.0, -0.5))
    assert results[1] == pytest.approx((1.0, -0.5))


# ---------------------------------------------------------------------------------------------
# adaptive_gan_weight
# ---------------------------------------------------------------------------------------------


def _tiny_last_layer() -> tuple[nn.Linear, torch.Tensor]:
    layer = nn.Linear(2, 1, bias=False)
    output = layer(torch.tensor([[3.0, 4.0]]))  # d output / d weight = [3, 4], norm 5
    return layer, output.sum()


def test_adaptive_weight_matches_hand_computation():
    layer, output = _tiny_last_layer()

    weight = adaptive_gan_weight(2.0 * output, 0.5 * output, layer.weight)

    # ||2 * [3, 4]|| / (||0.5 * [3, 4]|| + 1e-4) = 10 / 2.5001
    assert weight.item() == pytest.approx(10.0 / 2.5001, rel=1e-6)


def test_adaptive_weight_clamped_to_max():
    layer, output = _tiny_last_layer()

    weight = adaptive_gan_weight(2.0 * output, 0.5 * output, layer.weight, max_weight=3.0)

    assert weight.item() == 3.0


def test_adaptive_weight_default_max_is_1e4():
    layer, output = _tiny_last_layer()

    # The GAN gradient is zero, so the ratio is 10 / 1e-4 = 1e5 before the clamp.
    weight = adaptive_gan_weight(2.0 * output, 0.0 * output, layer.weight)

    assert weight.item() == pytest.approx(1e4)


def test_adaptive_weight_detached_and_graph_kept():
    layer, output = _tiny_last_layer()
    reconstruction_loss = 2.0 * output
    gan_loss = 0.5 * output

    weight = adaptive_gan_weight(reconstruction_loss, gan_loss, layer.weight)
    (reconstruction_loss + weight * gan_loss).backward()

    assert not weight.requires_grad
    assert layer.weight.grad is not None


def test_adaptive_weight_frozen_layer_raises():
    layer, output = _tiny_last_layer()
    frozen = layer.weight.detach()

    with pytest.raises(ValueError, match="does not require grad"):
        adaptive_gan_weight(output, output, frozen)


# ---------------------------------------------------------------------------------------------
# bf16 autocast
# ---------------------------------------------------------------------------------------------


def test_losses_finite_under_bf16_autocast():
    layer = nn.Linear(8, 1)
    real_features = torch.randn(4, 8)
    fake_features = torch.randn(4, 8)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        real_logits = layer(real_features).squeeze(-1)
        fake_logits = layer(fake_features).squeeze(-1)
        generator_loss = generator_adversarial_loss(fake_logits)
        output = discriminator_loss(real_logits, fake_logits)
        lecam = LeCamRegularizer()(real_logits, fake_logits)
        weight = adaptive_gan_weight(real_logits.abs().mean(), generator_loss, layer.weight)

    assert real_logits.dtype == torch.bfloat16
    for name, value in [("generator", generator_loss), ("discriminator", output.total), ("lecam", lecam)]:
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
    assert torch.isfinite(weight)
