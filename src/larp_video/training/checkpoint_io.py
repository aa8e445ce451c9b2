"""Crash-safe checkpoint files for Lightning.

Lightning 2.6's ``TorchCheckpointIO`` saves through an fsspec transaction: the bytes go to a
file made by ``tempfile.mkstemp()`` in the system temporary folder, which ``shutil.move`` then
moves over the target. When that folder is on another filesystem than the checkpoints (a
tmpfs ``/tmp``, a network or scratch filesystem for the run), the move is a copy into the
target path, and a kill during the copy leaves a truncated ``last.ckpt``. Nothing is synced to
disk either, so a power loss can leave an empty file behind a completed rename.

``AtomicCheckpointIO`` writes to a temporary file in the target's own folder, flushes and
fsyncs it, renames it over the target with ``os.replace`` (atomic on POSIX filesystems) and
fsyncs the folder. A reader sees the old file or the new one, never a mix, and a killed save
leaves at most a ``.<name>.tmp-*`` file, which the next save of that name removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from larp_video.files import new_file_mode

logger = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves replace the target file atomically (local paths only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        if "://" in str(path):
            # Remote filesystems (s3://, gs://) have their own commit semantics.
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, Path(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` through a synced temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        # mkstemp makes the file private (0600), but checkpoints get the mode of any new file.
        os.fchmod(descriptor, new_file_mode())
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _remove_stale_temporaries(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        logger.info("removing %s, left by an interrupted checkpoint save", stale)
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Some filesystems cannot open folders, and there the
    # rename is still atomic but may not survive a power loss.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
