"""A DataLoader that resumes in the middle of an epoch.

When Lightning resumes from a checkpoint saved in the middle of an epoch, it restores its count
of the epoch's batches already trained on and counts on from there. A plain DataLoader starts
the epoch from its first batch, so the resumed run trains twice on the epoch's first clips,
never on its last ones, and ends the epoch by the count.

``ResumableDataLoader`` starts each pass over the data at the trainer's count: a pass that
begins after a mid-epoch restore skips that many batches of indices without loading their
items. With an ``EpochSampler``, whose order depends only on the seed and the epoch, the resumed
run trains on the clips of an uninterrupted one. Each pass makes the DataLoader iterator when
its first batch is drawn, after Lightning has set the sampler's epoch. That matters with worker
processes, which draw indices as soon as their iterator exists: on resume, Lightning makes
the iterator before it sets the epoch.

The ``state_dict``, which Lightning saves in checkpoints, records the count, the batch size, the
process count, the number of items and a hash of the training files and seed. A run that
resumes mid-epoch with other values gets a warning, because the same count then covers other
clips.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


class ResumableDataLoader(DataLoader):
    """``DataLoader`` whose passes start after the batches the trainer counts as done.

    ``batches_done`` returns how many batches of the current epoch the trainer has trained on,
    0 at the start or end of an epoch (see ``batches_done_in_epoch``). ``data_key`` identifies
    what decides the epoch's order (see ``fingerprint_data``), so a resume with other data can
    warn. All other arguments are DataLoader's.
    """

    def __init__(
        self, *args: Any, batches_done: Callable[[], int] | None = None, data_key: str = "", **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done
        self.data_key = data_key
        self._batches_to_skip = 0
        self._saved_state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"batches_done": self._done(), **self._settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Only compared with this run's settings. The skip itself comes from the trainer's count,
        # which Lightning restores from the same checkpoint.
        self._saved_state = dict(state)

    def __iter__(self) -> Iterator:
        return _DeferredPass(self)

    def _start_pass(self) -> Iterator:
        done = self._done()
        skip = done if 0 < done < len(self) else 0
        saved, self._saved_state = self._saved_state, None
        if skip:
            logger.info("resuming in the middle of an epoch: skipping its first %d batches", skip)
            self._warn_if_settings_changed(saved, skip)
        self._batches_to_skip = skip
        return DataLoader.__iter__(self)

    def _done(self) -> int:
        return 0 if self.batches_done is None else int(self.batches_done())

    def _settings(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size if self.batch_size is not None else 1,
            "world_size": _world_size(),
            "num_items": len(self.dataset),  # type: ignore[arg-type]
            "data_key": self.data_key,
        }

    def _warn_if_settings_changed(self, saved: dict[str, Any] | None, skip: int) -> None:
        if saved is None or _rank() != 0:
            return
        now = self._settings()
        changed = {key: (saved[key], value) for key, value in now.items() if key in saved and saved[key] != value}
        if changed:
            # The key is a hash, so it is named rather than shown.
            listed = ", ".join(
                "the training files or data.seed" if key == "data_key" else f"{key} {before} -> {after}"
                for key, (before, after) in changed.items()
            )
            logger.warning(
                "resuming in the middle of an epoch with other data settings than the checkpoint (%s): "
                "the first %d batches of this epoch are skipped as counted, so some of its clips may be "
                "trained on twice or not at all; resume from an end-of-epoch checkpoint to avoid this",
                listed,
                skip,
            )

    @property
    def _index_sampler(self) -> Iterable:
        # DataLoader's iterators read this property once when they are made, and len() reads it
        # too, so the skip happens when a pass over the batches begins, not here.
        batches = super()._index_sampler
        return _SkipAtStart(batches, self) if self._batches_to_skip else batches


class _DeferredPass:
    """One pass over a ``ResumableDataLoader``, whose iterator is made at the first batch."""

    def __init__(self, loader: ResumableDataLoader):
        self.loader = loader
        self.iterator: Iterator | None = None

    def __iter__(self) -> _DeferredPass:
        return self

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = self.loader._start_pass()
        return next(self.iterator)

    def __len__(self) -> int:
        return len(self.loader)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader iterators cannot be pickled, so a copy starts its own pass.
        return {"loader": self.loader, "iterator": None}


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
        yield from itertools.islice(iter(self.batches), skip, None)


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def loader_generator(seed: int) -> torch.Generator:
    """Return a generator for a DataLoader, seeded with ``seed``.

    DataLoader iterators draw their workers' base seed from this generator instead of the
    global random state, so validation and new epochs leave training's random stream alone.
    """
    return torch.Generator().manual_seed(seed)


def fingerprint_data(*parts: Any) -> str:
    """Return a short hash of ``parts``: what decides an epoch's order, e.g. the files and seed."""
    text = json.dumps(parts, default=str, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def batches_done_in_epoch(trainer: Any) -> int:
    """Return the batches of the unfinished epoch that ``trainer`` has trained on, else 0.

    ``trainer`` is a Lightning Trainer, or None before the module is attached to one. When a
    checkpoint is saved, this is the count that the resumed run continues from. When a pass
    begins, it is 0, or the count restored from a mid-epoch checkpoint.
    """
    if trainer is None:
        return 0
    # "processed" counts a batch once its step has run, which is when ModelCheckpoint saves.
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return 0 if done >= trainer.num_training_batches else int(done)
