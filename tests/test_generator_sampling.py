"""LARPGenerator sampling: KV cache, greedy decoding, logits filters and classifier-free guidance."""

from __future__ import annotations

import math

import pytest
import torch

from larp_video.models.generator import GeneratorConfig, LARPGenerator
from larp_video.models.llama import KVCache
from larp_video.models.sampling import (
    apply_guidance,
    guidance_scale,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)


def random_generator(config: GeneratorConfig) -> LARPGenerator:
    """A generator in eval mode whose head is random, so that its logits are not all zero."""
    model = LARPGenerator(config).eval()
    torch.nn.init.normal_(model.head.weight, std=0.3)
    return model


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position_embedding", ["learned", "sincos", "rope"])
@pytest.mark.parametrize("cfg_scale", [1.0, 1.5])
def test_cached_equals_uncached(position_embedding, cfg_scale):
    model = random_generator(GeneratorConfig.tiny(position_embedding=position_embedding))
    labels = torch.tensor([0, 3, -1])
    cached = model.generate(labels, cfg_scale=cfg_scale, generator=seeded(), use_cache=True)
    uncached = model.generate(labels, cfg_scale=cfg_scale, generator=seeded(), use_cache=False)
    assert torch.equal(cached, uncached)


def test_cached_equals_uncached_frame_prediction():
    model = random_generator(GeneratorConfig.tiny(mode="frame_prediction"))
    condition = torch.randint(0, 64, (2, 16))
    cached = model.generate(condition, top_k=20, generator=seeded(), use_cache=True)
    uncached = model.generate(condition, top_k=20, generator=seeded(), use_cache=False)
    assert torch.equal(cached, uncached)


def test_cached_chunk_matches_full_sequence():
    model = random_generator(GeneratorConfig.tiny(position_embedding="rope"))
    embeddings = torch.randn(2, 10, 64)
    cache = KVCache(num_layers=2, max_length=10)
    with torch.no_grad():
        full = model.decode(embeddings)
        model.decode(embeddings[:, :4], cache=cache)
        chunk = model.decode(embeddings[:, 4:7], start=4, cache=cache)
    torch.testing.assert_close(chunk, full[:, 4:7])


def test_cache_overflow_raises():
    model = random_generator(GeneratorConfig.tiny())
    cache = KVCache(num_layers=2, max_length=3)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model.decode(torch.randn(1, 4, 64), cache=cache)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def test_generate_greedy_equals_argmax():
    model = random_generator(GeneratorConfig.tiny())
    labels = torch.tensor([1, 2])
    generated = model.generate(labels, temperature=0.0)

    expected = torch.zeros(2, 16, dtype=torch.long)
    with torch.no_grad():
        for step in range(16):
            logits = model(expected[:, : step + 1], labels).logits[:, step]
            expected[:, step] = logits.argmax(dim=-1)

    assert torch.equal(generated, expected)


def test_generate_same_seed_same_tokens():
    model = random_generator(GeneratorConfig.tiny())
    labels = torch.tensor([1, 2])
    assert torch.equal(model.generate(labels, generator=seeded(3)), model.generate(labels, generator=seeded(3)))


def test_generate_other_seed_other_tokens():
    model = random_generator(GeneratorConfig.tiny())
    labels = torch.tensor([1, 2])
    assert not torch.equal(model.generate(labels, generator=seeded(3)), model.generate(labels, generator=seeded(4)))


def test_generate_shape_and_range():
    model = random_generator(GeneratorConfig.tiny())
    tokens = model.generate(torch.tensor([0, 1, 2]), num_tokens=5, top_p=0.9, generator=seeded())
    assert tokens.shape == (3, 5)
    assert tokens.dtype == torch.long
    assert int(tokens.min()) >= 0
    assert int(tokens.max()) < 64


def test_generate_guided_equals_separate_passes():
    model = random_generator(GeneratorConfig.tiny())
    labels = torch.tensor([1, 4])
    null = torch.tensor([-1, -1])
    scale = 2.5
    generated = model.generate(labels, cfg_scale=scale, generator=seeded(7))

    draws = seeded(7)
    expected = torch.zeros(2, 16, dtype=torch.long)
    with torch.no_grad():
        for step in range(16):
            conditional = model(expected[:, : step + 1], labels).logits[:, step]
            unconditional = model(expected[:, : step + 1], null).logits[:, step]
            logits = unconditional + scale * (conditional - unconditional)
            expected[:, step] = sample_next_token(logits, generator=draws)

    assert torch.equal(generated, expected)


def test_generate_linear_schedule_starts_unguided():
    model = random_generator(GeneratorConfig.tiny())
    labels = torch.tensor([0, 1, 2, 3])
    scheduled = model.generate(labels, cfg_scale=4.0, cfg_schedule="linear", temperature=0.0)
    unguided = model.generate(labels, temperature=0.0)
    guided = model.generate(labels, cfg_scale=4.0, temperature=0.0)
    assert torch.equal(scheduled[:, 0], unguided[:, 0])
    assert not torch.equal(guided, unguided)


def test_generate_under_bf16_autocast():
    model = random_generator(GeneratorConfig.tiny())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.generate(torch.tensor([0, 1]), cfg_scale=1.5, generator=seeded())
    assert tokens.shape == (2, 16)
    assert tokens.dtype == torch.long


def test_generate_restores_training_mode():
    model = random_generator(GeneratorConfig.tiny()).train()
    model.generate(torch.tensor([0]), num_tokens=2)
    assert model.training


def test_generate_rejects_guidance_for_frame_prediction():
    model = random_generator(GeneratorConfig.tiny(mode="frame_prediction"))
    with pytest.raises(ValueError, match="cfg_scale"):
        model.generate(torch.zeros(1, 16, dtype=torch.long), cfg_scale=1.5)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_tokens": 17}, "num_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"cfg_schedule": "step"}, "cfg_schedule"),
    ],
)
def test_generate_rejects_invalid_argument(arguments, message):
    model = random_generator(GeneratorConfig.tiny())
    with pytest.raises(ValueError, match=message):
        model.generate(torch.tensor([0]), **arguments)


# ---------------------------------------------------------------------------------------------
# Logits processors and guidance
# ---------------------------------------------------------------------------------------------


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_k_keeps_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert torch.isfinite(top_k_filter(logits, 1)).sum() == 2


def test_top_k_zero_keeps_all():
    logits = torch.randn(2, 8)
    assert torch.equal(top_k_filter(logits, 0), logits)


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.4, [True, False, False, False]),
        (0.5, [True, False, False, False]),
        (0.7, [True, True, False, False]),
        (0.9, [True, True, True, False]),
        (1.0, [True, True, True, True]),
    ],
)
def test_top_p_keeps_nucleus(p, kept):
    # Shuffled order, probabilities 0.5, 0.3, 0.15 and 0.05.
    probabilities = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    order = [1, 3, 0, 2]
    filtered = top_p_filter(probabilities.log(), p)
    assert torch.isfinite(filtered)[0, order].tolist() == kept


def test_sample_top_k_one_is_argmax():
    logits = torch.randn(4, 32)
    tokens = sample_next_token(logits, top_k=1, generator=seeded())
    assert torch.equal(tokens, logits.argmax(dim=-1))


def test_sample_follows_probabilities():
    logits = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]]).expand(20_000, -1)
    tokens = sample_next_token(logits, generator=seeded())
    frequencies = torch.bincount(tokens, minlength=3).float() / tokens.numel()
    torch.testing.assert_close(frequencies, torch.tensor([0.7, 0.2, 0.1]), rtol=0, atol=0.015)


def test_guidance_scale_one_returns_conditional_exactly():
    conditional = torch.randn(3, 64)
    unconditional = torch.randn(3, 64)
    assert torch.equal(apply_guidance(conditional, unconditional, 1.0), conditional)


def test_guidance_matches_formula():
    conditional = torch.randn(3, 64)
    unconditional = torch.randn(3, 64)
    expected = unconditional + 1.75 * (conditional - unconditional)
    torch.testing.assert_close(apply_guidance(conditional, unconditional, 1.75), expected)


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 0, 3.0),
        ("constant", 9, 3.0),
        ("linear", 0, 1.0),
        ("linear", 5, 1.0 + 2.0 * 5 / 10),
        ("linear", 10, 3.0),
        ("cosine", 0, 1.0),
        ("cosine", 5, 2.0),
        ("cosine", 10, 3.0),
    ],
)
def test_guidance_schedule(schedule, step, expected):
    assert guidance_scale(3.0, schedule, step, 11) == pytest.approx(expected)
