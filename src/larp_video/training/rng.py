"""Random number state of a training process: per-rank seeds and checkpointable states.

Lightning's ``seed_everything`` gives every rank the same seed, so without care all ranks
would draw the same code samples, dropout masks and label noise. Each rank therefore reseeds
its global generators and a dedicated sampling generator from ``seed`` and its rank.
Checkpoints store the states of every rank, gathered to the rank that writes the file.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# Spreads the seeds of neighbouring ranks apart (a large prime).
RANK_SEED_STRIDE = 1_000_003


def rank_seed(seed: int, rank: int) -> int:
    return (seed + RANK_SEED_STRIDE * rank) % 2**63


def seed_rank(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """Seed Python, NumPy and torch for ``rank`` and return a generator on ``device`` for sampling."""
    value = rank_seed(seed, rank)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    generator = torch.Generator(device=device)
    generator.manual_seed(value + 1)
    return generator


def capture_rng_state(generator: torch.Generator) -> dict:
    """Return this process's random states as tensors and plain Python values.

    The NumPy key array is stored as a tensor, so checkpoints stay loadable with
    ``torch.load(weights_only=True)``.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)),
        "torch": torch.get_rng_state(),
        "sampling": generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampling"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(generator: torch.Generator) -> list[dict]:
    """Return the random states of all ranks, in rank order (a collective under torch.distributed)."""
    state = capture_rng_state(generator)
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def restore_or_reseed(
    states: list[dict] | None, world_size: int, rank: int, generator: torch.Generator, seed: int, step: int
) -> torch.Generator:
    """Restore this rank's random states from a checkpoint's ``states``, or reseed them.

    ``states`` has one entry per rank of the run that saved it, or is None. A fresh run (no
    states at step 0) keeps ``generator`` and the global states as seeded. A checkpoint without
    states, or from a run with another number of processes, reseeds every rank from
    ``seed + step``, so the resumed run does not repeat the random draws of its first steps.
    Returns the sampling generator to use from now on.
    """
    if states is not None and len(states) == world_size:
        restore_rng_state(states[rank], generator)
        return generator
    if states is None and step == 0:
        return generator
    if rank == 0:
        if states is None:
            logger.warning("the checkpoint has no random states; reseeding every process from step %d", step)
        else:
            logger.warning(
                "the checkpoint has the random states of %s, and this run has %d; reseeding every process "
                "from step %d",
                "1 process" if len(states) == 1 else f"{len(states)} processes",
                world_size,
                step,
            )
    return seed_rank(seed + step, rank, generator.device)


def _as_tuple(value):
    # Python's random state is a nested tuple; a checkpoint round trip may return lists.
    if isinstance(value, list):
        return tuple(_as_tuple(item) for item in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(item) for item in value)
    return value
