"""Random states of training processes: restored from a checkpoint, or reseeded from the step."""

from __future__ import annotations

import torch

from larp_video.training.rng import capture_rng_state, restore_or_reseed, seed_rank

CPU = torch.device("cpu")


def draws(generator: torch.Generator) -> list[float]:
    return torch.rand(3).tolist() + torch.rand(3, generator=generator).tolist()


def test_restore_continues_saved_draws():
    generator = seed_rank(0, 1, CPU)
    saved = [capture_rng_state(seed_rank(0, 0, CPU)), capture_rng_state(generator)]
    expected = draws(generator)

    restored = restore_or_reseed(saved, 2, 1, seed_rank(5, 1, CPU), seed=0, step=10)
    assert draws(restored) == expected


def test_fresh_run_keeps_its_seed():
    generator = seed_rank(0, 0, CPU)
    state = capture_rng_state(generator)
    assert restore_or_reseed(None, 1, 0, generator, seed=0, step=0) is generator
    assert torch.equal(torch.get_rng_state(), state["torch"])


def test_missing_states_reseed_from_step(caplog):
    restored = restore_or_reseed(None, 1, 0, seed_rank(0, 0, CPU), seed=0, step=7)
    assert draws(restored) == draws(seed_rank(7, 0, CPU))
    assert "no random states; reseeding every process from step 7" in caplog.text


def test_other_process_count_reseeds(caplog):
    saved = [capture_rng_state(seed_rank(0, 0, CPU))]
    restored = restore_or_reseed(saved, 2, 1, seed_rank(0, 1, CPU), seed=0, step=4)
    assert draws(restored) == draws(seed_rank(4, 1, CPU))
    assert caplog.text == ""  # only rank 0 logs

    restore_or_reseed(saved, 2, 0, seed_rank(0, 0, CPU), seed=0, step=4)
    assert "the random states of 1 process, and this run has 2" in caplog.text
