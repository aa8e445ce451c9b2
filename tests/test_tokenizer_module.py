"""TokenizerTrainingModule pieces tested without a Trainer: optimisers, EMA, losses, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from larp_video.models.tokenizer import TokenizerConfig
from larp_video.training.checkpoints import tokenizer_from_lightning_checkpoint
from larp_video.training.ema import ExponentialMovingAverage
from larp_video.training.tokenizer_metrics import check_finite, codebook_statistics
from larp_video.training.tokenizer_module import TokenizerTrainingModule
from training_setup import TINY_TOKENIZER

TOKENIZER = TokenizerConfig.from_dict(TINY_TOKENIZER)


def tiny_module(**overrides) -> TokenizerTrainingModule:
    options = {"tokenizer": TOKENIZER, "lpips_weight": 0.0, "gan_weight": 0.0, "warmup_steps": 0}
    options.update(overrides)
    module = TokenizerTrainingModule(**options)
    module._total_steps = 100
    return module


def changes_after_one_adam_step(multiplier: float) -> tuple[float, float]:
    """Return the mean |update| of (tokenizer, prior) weights after one step from the same start."""
    torch.manual_seed(0)
    module = tiny_module(prior_lr_multiplier=multiplier, learning_rate=1e-3)
    (optimizer,) = module.configure_optimizers()
    module._set_learning_rates([optimizer], step=50)
    before = {name: p.detach().clone() for name, p in module.tokenizer.named_parameters()}

    video = torch.rand(2, 3, 8, 32, 32)
    output = module.tokenizer(video, step=0, total_steps=100, sample_codes=False)
    loss = F.l1_loss(output.reconstruction, video) + 0.1 * output.vq_loss + output.prior_loss
    loss.backward()
    optimizer.step()

    def mean_change(prefix: str, inside: bool) -> float:
        changes = [
            (p.detach() - before[name]).abs().mean()
            for name, p in module.tokenizer.named_parameters()
            if name.startswith(prefix) == inside and p.grad is not None
        ]
        return float(torch.stack(changes).mean())

    return mean_change("prior.", False), mean_change("prior.", True)


def test_prior_lr_multiplier_sets_group_rate():
    module = tiny_module(prior_lr_multiplier=50.0, learning_rate=1e-4)
    (optimizer,) = module.configure_optimizers()
    module._set_learning_rates([optimizer], step=10)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["prior"] == pytest.approx(50 * rates["tokenizer"])


def test_prior_lr_multiplier_scales_updates():
    # Adam's first update is about lr * sign(grad), so the prior moves 50x further.
    tokenizer_1, prior_1 = changes_after_one_adam_step(1.0)
    tokenizer_50, prior_50 = changes_after_one_adam_step(50.0)
    assert tokenizer_50 == pytest.approx(tokenizer_1, rel=1e-4)
    assert prior_50 / prior_1 == pytest.approx(50.0, rel=0.05)


def test_learning_rate_follows_warmup_and_cosine():
    module = tiny_module(learning_rate=1e-3, warmup_steps=10)
    module._warmup_steps = 10
    assert module.learning_rate_factor(0) == pytest.approx(0.01)
    assert module.learning_rate_factor(10) == pytest.approx(1.0)
    assert module.learning_rate_factor(100) == pytest.approx(0.01)


def test_disabled_losses_build_nothing():
    module = tiny_module()
    assert module.lpips is None
    assert module.adversarial is None
    assert len(module.configure_optimizers()) == 1


def test_gan_builds_discriminator_for_tokenizer_clip():
    module = tiny_module(gan_weight=0.3, discriminator={"dim": 16, "depth": 1, "num_heads": 2})
    config = module.adversarial.discriminator.config
    assert (config.num_frames, config.image_size) == (8, 32)
    assert len(module.configure_optimizers()) == 2


def test_lpips_stays_out_of_state_dict():
    module = tiny_module(lpips_weight=1.0)
    assert module.lpips is not None
    assert not any("lpips" in key or "vgg" in key for key in module.state_dict())


def test_lpips_counts_from_its_start_step():
    torch.manual_seed(0)
    module = tiny_module(lpips_weight=1.0, lpips_frames=1, lpips_start_step=3)
    video = torch.rand(1, 3, 8, 32, 32)
    output = module.tokenizer(video, step=0, total_steps=100)
    before, before_logs = module.generator_loss(video, output, step=2)
    after, after_logs = module.generator_loss(video, output, step=3)
    assert "lpips" not in before_logs
    assert "lpips" in after_logs
    assert torch.allclose(after - before, after_logs["lpips"], atol=1e-5)


@pytest.mark.parametrize(
    "step, updates",
    [(0, False), (3, False), (4, True), (5, False), (8, True)],
)
def test_discriminator_schedule(step, updates):
    module = tiny_module(gan_weight=0.3, gan_start_step=4, discriminator_every=2, discriminator={"dim": 16, "depth": 1, "num_heads": 2})
    assert module.discriminator_updates_at(step) is updates


def test_discriminator_can_start_before_gan():
    module = tiny_module(
        gan_weight=0.3, gan_start_step=10, discriminator_start_step=2, discriminator={"dim": 16, "depth": 1, "num_heads": 2}
    )
    assert module.discriminator_updates_at(5)
    assert not module.gan_active_at(5)


def test_ema_decay_warms_up():
    ema = ExponentialMovingAverage(torch.nn.Linear(2, 2), decay=0.9999)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.num_updates = 10**6
    assert ema.current_decay() == pytest.approx(0.9999)


def test_ema_update_moves_towards_weights():
    model = torch.nn.Linear(2, 2)
    ema = ExponentialMovingAverage(model, decay=0.5)
    ema.num_updates = 100
    with torch.no_grad():
        model.weight.add_(1.0)
    expected = ema.model.weight.detach() + 0.5
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, expected)


def test_checkpoint_loader_prefers_ema(tmp_path):
    module = tiny_module(ema_decay=0.5)
    with torch.no_grad():
        module.ema.model.queries.fill_(0.25)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path / "model.ckpt"
    torch.save(checkpoint, path)

    ema = tokenizer_from_lightning_checkpoint(path, use_ema=True)
    trained = tokenizer_from_lightning_checkpoint(path, use_ema=False)
    assert torch.all(ema.queries == 0.25)
    torch.testing.assert_close(trained.queries, module.tokenizer.queries)


def test_compile_keeps_parameter_names():
    plain = tiny_module()
    compiled = tiny_module(compile=True, compile_backend="eager")
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_check_finite_names_step_and_term():
    logs = {"l1": torch.tensor(0.5), "lpips": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match=r"step 7: \{'lpips': nan\}"):
        check_finite(torch.tensor(float("nan")), logs, 7)


def test_codebook_statistics_uniform_and_single():
    usage, perplexity = codebook_statistics(torch.tensor([5, 5, 5, 5]))
    assert float(usage) == pytest.approx(1.0)
    assert float(perplexity) == pytest.approx(4.0)
    usage, perplexity = codebook_statistics(torch.tensor([0, 9, 0, 0]))
    assert float(usage) == pytest.approx(0.25)
    assert float(perplexity) == pytest.approx(1.0)


def test_lpips_frames_beyond_clip_rejected():
    with pytest.raises(ValueError, match="lpips_frames"):
        tiny_module(lpips_frames=9)
