"""Splitting an evaluation across torch.distributed ranks (one process per GPU under torchrun).

Rank r of a world of size w processes items ``r, r + w, r + 2w, ...`` of every list, so the
shards are disjoint and together cover the list. Sums (feature statistics, codebook counts) are
all-reduced, per-clip records are gathered, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    """Return the items of ``rank``: ``items[rank::world_size]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank {rank} of {world_size}")
    return list(items[rank::world_size])


@dataclasses.dataclass(frozen=True)
class RankInfo:
    """This process's rank and the number of processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> RankInfo:
        """Return the rank of the initialised default process group, or rank 0 of 1 without one."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_lists(items: list[Any]) -> list[Any]:
    """Concatenate every rank's picklable ``items`` in rank order (the list itself without a group)."""
    if not is_distributed():
        return list(items)
    gathered: list[list[Any] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in (part or [])]


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def torchrun_world_size(environment: dict[str, str] | None = None) -> int:
    """Return ``WORLD_SIZE`` as set by torchrun, or 1."""
    environment = os.environ if environment is None else environment
    return int(environment.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Initialise the default process group when started by torchrun; yield this rank's device.

    Uses NCCL with one GPU per rank (``cuda:LOCAL_RANK``) for CUDA devices and gloo otherwise.
    Without torchrun (``WORLD_SIZE`` unset or 1), or with a group that already exists, it
    yields ``device`` unchanged and creates nothing.
    """
    if torchrun_world_size() <= 1 or is_distributed():
        yield device
        return

    # NOTE: only the gloo path on CPUs has been run; the NCCL path with one GPU per rank has not.
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend=backend)
    rank, world_size = torch.distributed.get_rank(), torchrun_world_size()
    logger.info("rank %d of %d started on %s (%s)", rank, world_size, device, backend)
    try:
        yield device
    finally:
        torch.distributed.destroy_process_group()
