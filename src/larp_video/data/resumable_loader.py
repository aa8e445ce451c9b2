"""A DataLoader that resumes in the middle of an epoch.

Lightning saves the ``state_dict`` of a training DataLoader in each checkpoint and, on resume,
passes it to ``load_state_dict`` before the interrupted epoch starts again. Without that, the
resumed epoch starts from its first batch, so a run killed in the middle of an epoch trains
twice on that epoch's first clips and never on its last ones.

``ResumableDataLoader`` records how many batches of the unfinished epoch training has
completed. After ``load_state_dict``, its next iteration skips that many batches of indices
without loading their items. An ``EpochSampler`` draws the same order for an epoch in every run,
so the resumed run trains on the clips of an uninterrupted one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


class ResumableDataLoader(DataLoader):
    """``DataLoader`` with a ``state_dict``: the batches of the current epoch already trained on.

    ``batches_done`` returns that count when a checkpoint is saved, 0 at the end of an epoch.
    The state also records the batch size and the process count, so a run resumed with other
    values skips the whole batches closest in number to the clips already trained on. All other arguments
    are DataLoader's.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done
        self._batches_to_skip = 0

    def state_dict(self) -> dict[str, int]:
        done = 0 if self.batches_done is None else int(self.batches_done())
        return {"batches_done": done, "batch_size": self._batch_size(), "world_size": _world_size()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state.get("batches_done", 0))
        saved = (int(state.get("batch_size", self._batch_size())), int(state.get("world_size", _world_size())))
        now = (self._batch_size(), _world_size())
        if done and saved != now:
            # Under DDP, rank r reads items r, r + W, r + 2W, ... of the epoch's order, so the
            # first done x B x W items were trained on. Skip about as many items now. Between one
            # process and several the orders differ, so only the count carries over.
            items = done * saved[0] * saved[1]
            logger.warning(
                "the checkpoint was saved with batch size %d on %d processes and this run has %d on %d; "
                "skipping %d batches, the closest to the %d clips already trained on in this epoch",
                *saved, *now, items // (now[0] * now[1]), items,
            )
            done = items // (now[0] * now[1])
        self._batches_to_skip = done

    def _batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else 1

    @property
    def _index_sampler(self) -> Iterable:
        # DataLoader's iterators read this property once when they are made, and len() reads it
        # too, so the skip happens when a pass over the batches begins, not here.
        batches = super()._index_sampler
        return _SkipAtStart(batches, self) if self._batches_to_skip else batches


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class _SkipAtStart:
    """Batches of indices whose first pass leaves out the loader's pending skip count."""

    def __init__(self, batches: Iterable, loader: ResumableDataLoader):
        self.batches = batches
        self.loader = loader

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        # A generator, so the skip is taken at the first batch drawn: worker-process iterators
        # call iter() twice when they start and drop the first result unused.
        skip, self.loader._batches_to_skip = self.loader._batches_to_skip, 0
        if skip >= len(self):
            # The checkpoint came at the end of an epoch, and the resumed run starts a new one.
            skip = 0
        if skip:
            logger.info("resuming in the middle of an epoch: skipping its first %d batches", skip)
        yield from itertools.islice(iter(self.batches), skip, None)


def loader_generator(seed: int) -> torch.Generator:
    """Return a generator for a DataLoader, seeded with ``seed``.

    DataLoader iterators draw their workers' base seed from this generator instead of the
    global random state, so validation and new epochs leave training's random stream alone.
    """
    return torch.Generator().manual_seed(seed)


def batches_done_in_epoch(trainer: Any) -> int:
    """Return the batches of the unfinished epoch that ``trainer`` has trained on, else 0.

    ``trainer`` is a Lightning Trainer, or None before the module is attached to one.
    """
    if trainer is None:
        return 0
    # "processed" counts a batch once its step has run, which is when ModelCheckpoint saves.
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return 0 if done >= trainer.num_training_batches else int(done)
