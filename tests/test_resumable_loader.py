"""ResumableDataLoader: a resumed epoch continues after the batches already trained on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from larp_video.data.datasets import EpochSampler
from larp_video.data.resumable_loader import ResumableDataLoader, batches_done_in_epoch, fingerprint_data


def loader(batches_done=lambda: 0, num_workers=0, batch_size=2, **kwargs):
    sampler = EpochSampler(12, seed=3, with_seeds=False)
    return ResumableDataLoader(
        list(range(12)), batch_size=batch_size, sampler=sampler, batches_done=batches_done, num_workers=num_workers,
        **kwargs,
    )


def epoch(data_loader, number=0):
    data_loader.sampler.set_epoch(number)
    return [batch.tolist() for batch in data_loader]


class Counter:
    """Stands in for the trainer's count of the epoch's batches already trained on."""

    def __init__(self, value=0):
        self.value = value

    def __call__(self):
        return self.value


def test_state_dict_records_count_and_shape():
    state = loader(Counter(4), data_key="abc").state_dict()
    assert state == {"batches_done": 4, "batch_size": 2, "world_size": 1, "num_items": 12, "data_key": "abc"}
    assert loader(batches_done=None).state_dict()["batches_done"] == 0


def test_pass_starts_after_counted_batches():
    full = epoch(loader())
    counter = Counter(4)
    resumed = loader(counter)

    assert len(resumed) == 6  # Lightning counts the whole epoch
    assert epoch(resumed) == full[4:]
    counter.value = 0  # a new epoch
    assert epoch(resumed) == full


def test_count_of_whole_epoch_skips_nothing():
    assert epoch(loader(Counter(6)), 1) == epoch(loader(), 1)


@pytest.mark.parametrize("persistent", [False, True])
def test_resume_with_worker_processes(persistent):
    full = epoch(loader())
    counter = Counter(2)
    resumed = loader(counter, num_workers=2, persistent_workers=persistent)
    assert epoch(resumed) == full[2:]
    counter.value = 0
    assert epoch(resumed, 1) == epoch(loader(), 1)


def test_epoch_set_after_iter_applies_with_workers():
    # On resume Lightning makes the iterator first and sets the sampler's epoch afterwards.
    expected = epoch(loader(), 3)[1:]
    resumed = loader(Counter(1), num_workers=2)
    resumed.sampler.set_epoch(0)
    iterator = iter(resumed)
    resumed.sampler.set_epoch(3)
    assert [batch.tolist() for batch in iterator] == expected


def test_resume_with_other_batch_size_warns(caplog):
    resumed = loader(Counter(1), batch_size=3)
    resumed.load_state_dict({"batches_done": 1, "batch_size": 2, "world_size": 1, "num_items": 12, "data_key": ""})
    epoch(resumed)
    assert "batch_size 2 -> 3" in caplog.text
    assert "the first 1 batches of this epoch are skipped" in caplog.text


def test_resume_with_other_data_warns(caplog):
    resumed = loader(Counter(1), data_key=fingerprint_data(["a.mp4", "b.mp4"], 1))
    resumed.load_state_dict({**resumed.state_dict(), "data_key": fingerprint_data(["a.mp4", "b.mp4"], 0)})
    epoch(resumed)
    assert "other data settings than the checkpoint (the training files or data.seed)" in caplog.text


def test_resume_with_same_settings_does_not_warn(caplog):
    resumed = loader(Counter(2))
    resumed.load_state_dict(resumed.state_dict())
    epoch(resumed)
    assert "other data settings" not in caplog.text


def test_lightning_distributed_copy_keeps_resume_state():
    # Under DDP Lightning rebuilds the loader around a DistributedSampler from its init arguments.
    original = loader(Counter(1))
    rebuilt = _update_dataloader(original, DistributedSampler(original.dataset, num_replicas=2, rank=0, shuffle=False))
    assert isinstance(rebuilt, ResumableDataLoader)
    assert rebuilt.state_dict()["batches_done"] == 1
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
