"""Lists of training videos: folders, text lists and CSV manifests.

A source is one of:

* a folder, searched recursively for files with a video extension;
* a ``.txt`` file with one path per line (``#`` starts a comment line);
* a ``.csv`` manifest in the reference format ``id,path,action,label``; only ``path`` is
  required, and a missing or empty ``label`` becomes -1;
* a single video file;
* a list of any of these, joined in order.

Relative paths in lists and manifests are resolved against ``root`` when it is given, else
against the folder of the list file. The reference implementation's UCF-101 and Kinetics-600
manifests store paths such as ``data/ucf101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi``,
relative to its repository root, so they need ``root`` set to the folder that contains ``data/``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".m4v", ".flv", ".wmv", ".ts"}

Source = str | os.PathLike | Sequence[str | os.PathLike]


def list_labeled_videos(source: Source, root: str | os.PathLike | None = None) -> list[tuple[Path, int]]:
    """Resolve ``source`` into (path, label) pairs; label is -1 where the source has none."""
    if isinstance(source, (list, tuple)):
        pairs = []
        for item in source:
            pairs.extend(list_labeled_videos(item, root))
        return pairs

    source = Path(source).expanduser()
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not paths:
            raise FileNotFoundError(f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) found under {source}")
        return [(path, -1) for path in paths]
    if not source.is_file():
        raise FileNotFoundError(f"video source {source} not found; pass a folder, a .csv manifest or a .txt list")

    base = Path(root).expanduser() if root is not None else source.parent
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return read_manifest(source, root=base)
    if suffix == ".txt":
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        return [(_resolve(base, line), -1) for line in lines if line and not line.startswith("#")]
    if suffix in VIDEO_EXTENSIONS:
        return [(source, -1)]
    raise ValueError(f"cannot tell what {source} lists; use a folder, a .csv manifest, a .txt list or a video file")


def list_videos(source: Source, root: str | os.PathLike | None = None) -> list[Path]:
    """Resolve ``source`` into video paths (see the module docstring for the accepted sources)."""
    return [path for path, _ in list_labeled_videos(source, root)]


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[Path, int]]:
    """Read an ``id,path,action,label`` CSV manifest into (path, label) pairs.

    Relative paths are resolved against ``root``, by default the manifest's folder. Action names
    may contain spaces and brackets (Kinetics: ``backflip (human)``); the csv module handles
    quoted fields with commas.
    """
    path = Path(path)
    base = Path(root).expanduser() if root is not None else path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(
                f"manifest {path} has no 'path' column (header {reader.fieldnames}); "
                "expected the header id,path,action,label"
            )
        rows = []
        for line_number, row in enumerate(reader, start=2):
            if not row["path"]:
                raise ValueError(f"manifest {path} line {line_number} has an empty path")
            label_text = (row.get("label") or "").strip()
            try:
                label = int(label_text) if label_text else -1
            except ValueError:
                raise ValueError(
                    f"manifest {path} line {line_number} has label {label_text!r}; labels must be integers"
                ) from None
            rows.append((_resolve(base, row["path"]), label))
    return rows


def _resolve(base: Path, entry: str) -> Path:
    candidate = Path(entry).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
