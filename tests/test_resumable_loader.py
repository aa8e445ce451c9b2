"""ResumableDataLoader: a resumed epoch continues after the batches already trained on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from larp_video.data.datasets import EpochSampler
from larp_video.data.resumable_loader import ResumableDataLoader, batches_done_in_epoch


def loader(batches_done=lambda: 0, num_workers=0, batch_size=2, **kwargs):
    sampler = EpochSampler(12, seed=3, with_seeds=False)
    return ResumableDataLoader(
        list(range(12)), batch_size=batch_size, sampler=sampler, batches_done=batches_done, num_workers=num_workers,
        **kwargs,
    )


def epoch(data_loader, number=0):
    data_loader.sampler.set_epoch(number)
    return [batch.tolist() for batch in data_loader]


def test_state_dict_reports_batches_done():
    assert loader(lambda: 4).state_dict() == {"batches_done": 4, "batch_size": 2, "world_size": 1}
    assert loader(batches_done=None).state_dict()["batches_done"] == 0


def test_other_batch_size_skips_same_clips(caplog):
    full = [item for batch in epoch(loader()) for item in batch]
    resumed = loader(batch_size=3)
    resumed.load_state_dict({"batches_done": 1, "batch_size": 2, "world_size": 3})  # 6 clips done

    assert [item for batch in epoch(resumed) for item in batch] == full[6:]
    assert "skipping 2 batches, the closest to the 6 clips" in caplog.text

    resumed = loader(batch_size=4)
    resumed.load_state_dict({"batches_done": 3, "batch_size": 2, "world_size": 1})  # 6 clips done
    assert [item for batch in epoch(resumed) for item in batch] == full[4:]


def test_resumed_epoch_skips_done_batches():
    full = epoch(loader())
    resumed = loader()
    resumed.load_state_dict({"batches_done": 4})

    assert len(resumed) == 6  # Lightning counts the whole epoch
    assert epoch(resumed) == full[4:]
    assert epoch(resumed) == full  # only the first pass after loading skips


def test_skip_of_whole_epoch_starts_next_epoch():
    resumed = loader()
    resumed.load_state_dict({"batches_done": 6})
    assert epoch(resumed, 1) == epoch(loader(), 1)


@pytest.mark.parametrize("persistent", [False, True])
def test_resume_with_worker_processes(persistent):
    full = epoch(loader())
    resumed = loader(num_workers=2, persistent_workers=persistent)
    resumed.load_state_dict({"batches_done": 2})
    assert epoch(resumed) == full[2:]
    assert epoch(resumed, 1) == epoch(loader(), 1)


def test_lightning_distributed_copy_keeps_resume_state():
    # Under DDP Lightning rebuilds the loader around a DistributedSampler from its init arguments.
    original = loader(lambda: 2)
    rebuilt = _update_dataloader(original, DistributedSampler(original.dataset, num_replicas=2, rank=0, shuffle=False))
    assert isinstance(rebuilt, ResumableDataLoader)
    assert rebuilt.state_dict()["batches_done"] == 2
    rebuilt.load_state_dict({"batches_done": 1})
    assert [batch.tolist() for batch in rebuilt] == [[4, 6], [8, 10]]


def test_batches_done_in_epoch():
    def trainer(processed, batches):
        progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
        return SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)), num_training_batches=batches)

    assert batches_done_in_epoch(None) == 0
    assert batches_done_in_epoch(trainer(4, 6)) == 4
    assert batches_done_in_epoch(trainer(6, 6)) == 0  # a finished epoch


def test_epoch_sampler_items_alone_follow_seeded_order():
    pairs = EpochSampler(12, seed=3)
    items = EpochSampler(12, seed=3, with_seeds=False)
    assert list(items) == [item for item, _ in pairs]
    assert all(isinstance(item, int) for item in items)
    assert torch.tensor(list(items)).sort().values.tolist() == list(range(12))
