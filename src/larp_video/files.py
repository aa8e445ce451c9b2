"""Atomic file writes that leave files with the usual permissions.

``tempfile.mkstemp`` creates files that only their owner can read (mode 0600), and so does
safetensors' ``save_file``. Model folders, token shards and checkpoints are often shared on a
cluster. So the writers here give each file the mode that ``open()`` gives a new file: 0666
without the bits of the process umask, which is 0644 under the common umask 022.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def new_file_mode() -> int:
    """Return the mode that ``open()`` gives a new file: 0o666 without the umask bits."""
    return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # Linux 4.7 and newer report the umask in /proc. Elsewhere os.umask is the only way to read
    # it, and it sets a value for a moment, so it is the fallback.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write`` on a hidden temporary file beside ``path``, then rename it to ``path``.

    The file gets ``new_file_mode()`` before the rename, so a reader sees the old file or the
    complete new one, readable as any other new file. A failed ``write`` leaves no temporary.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
