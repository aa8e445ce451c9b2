"""Token shards: the on-disk layout of a tokenized video dataset.

``larp tokenize-dataset`` writes a folder of safetensors shards plus ``index.json``. Shard
``s`` contains the clips of the videos at positions ``[s * V, (s + 1) * V)`` of the manifest
sorted by path (V = ``shard_size``), so a shard's content depends only on the manifest and the
settings, never on how many processes wrote the folder. Tensors of a shard (n clips, N tokens):

    indices      (n, N) int64   deterministic codes of each clip
    labels       (n,)   int64   the video's manifest label (-1 when the manifest has none)
    video_index  (n,)   int64   the video's position in the sorted manifest
    start_frame  (n,)   int64   first frame of the clip in the video
    flipped      (n,)   bool    the clip was mirrored horizontally before tokenizing
    condition    (n, N) int64   frame prediction only: codes of the clip's first frames,
                                padded to the clip length by repeating the last given frame

The string metadata stores the shard's number, video range and skipped videos, and
``settings``: a JSON object with everything that decides the codes (tokenizer config and
weight hashes, manifest SHA-256, clip rule, seed, fit, precision). Shards and the index are
written to a hidden temporary name and renamed, so a file under a final name is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from larp_video.files import atomic_write

logger = logging.getLogger(__name__)

SHARD_FORMAT = "larp-video-token-shard"
SHARD_VERSION = 1
INDEX_NAME = "index.json"
CLASSES_NAME = "classes.txt"
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.safetensors$")
# Settings that may differ between a finished shard and a restarted run without changing codes.
_INFORMATIONAL_SETTINGS = ("tokenizer", "manifest")


class TokenShardError(ValueError):
    """A token folder is incomplete, malformed, or was written with other settings."""


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def num_shards(num_videos: int, shard_size: int) -> int:
    """Return how many shards ``num_videos`` videos fill at ``shard_size`` videos per shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1 video, got {shard_size}")
    return math.ceil(num_videos / shard_size)


def shard_videos(number: int, num_videos: int, shard_size: int) -> range:
    """Return the sorted-manifest positions of the videos in shard ``number``."""
    return range(number * shard_size, min((number + 1) * shard_size, num_videos))


def shards_for_rank(total_shards: int, rank: int, world_size: int) -> list[int]:
    """Return the shard numbers that process ``rank`` of ``world_size`` writes: ``s % world_size == rank``.

    The ranks' sets are disjoint and together cover every shard, so every video is tokenized
    by exactly one process.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank {rank} of {world_size}")
    return list(range(rank, total_shards, world_size))


def settings_sha256(values: Mapping[str, Any]) -> str:
    """Return the SHA-256 of ``values`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Return a SHA-256 over the names, dtypes, shapes and bytes of a module's state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class ShardContent:
    """The clips of one shard, in (video_index, start order, flipped) order."""

    indices: torch.Tensor  # (n, N) int64
    labels: torch.Tensor  # (n,) int64
    video_index: torch.Tensor  # (n,) int64
    start_frame: torch.Tensor  # (n,) int64
    flipped: torch.Tensor  # (n,) bool
    condition: torch.Tensor | None = None  # (n, N) int64, frame prediction only

    @property
    def num_clips(self) -> int:
        return self.indices.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "indices": self.indices.to(torch.int64).contiguous(),
            "labels": self.labels.to(torch.int64).contiguous(),
            "video_index": self.video_index.to(torch.int64).contiguous(),
            "start_frame": self.start_frame.to(torch.int64).contiguous(),
            "flipped": self.flipped.to(torch.bool).contiguous(),
        }
        if self.condition is not None:
            tensors["condition"] = self.condition.to(torch.int64).contiguous()
        return tensors


def write_shard(
    directory: str | os.PathLike,
    number: int,
    content: ShardContent,
    settings: Mapping[str, Any],
    videos: range,
    skipped: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write shard ``number`` atomically and return its path.

    ``videos`` is the shard's range of sorted-manifest positions and ``skipped`` lists the
    videos of that range that could not be read (``video_index``, ``path``, ``reason``).
    """
    path = Path(directory) / shard_name(number)
    metadata = {
        "format": SHARD_FORMAT,
        "version": str(SHARD_VERSION),
        "shard": str(number),
        "first_video": str(videos.start),
        "end_video": str(videos.stop),
        "clips": str(content.num_clips),
        "skipped": json.dumps(list(skipped)),
        "settings": json.dumps(dict(settings), sort_keys=True),
    }
    atomic_write(path, lambda temporary: save_file(content.tensors(), str(temporary), metadata=metadata))
    return path


def remove_temporary_files(directory: str | os.PathLike, numbers: Sequence[int]) -> int:
    """Delete temporary files that interrupted writes of shards ``numbers`` left behind.

    Returns how many were deleted. Only the rank that owns a shard calls this for it, so a
    temporary file of a shard that another rank is writing is never touched.
    """
    removed = 0
    for number in numbers:
        for leftover in Path(directory).glob(f".{shard_name(number)}.*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def read_shard_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return a shard's metadata with numbers, ``skipped`` and ``settings`` decoded."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as error:  # safetensors raises several types for malformed files
        raise TokenShardError(f"cannot read token shard {path}: {error}; delete it and rerun tokenize-dataset") from error
    if raw.get("format") != SHARD_FORMAT:
        raise TokenShardError(f"{path} is not a token shard (written by `larp tokenize-dataset`)")
    return {
        "file": path.name,
        "shard": int(raw["shard"]),
        "first_video": int(raw["first_video"]),
        "end_video": int(raw["end_video"]),
        "clips": int(raw["clips"]),
        "skipped": json.loads(raw["skipped"]),
        "settings": json.loads(raw["settings"]),
    }


def read_shard(
    path: str | os.PathLike, names: Sequence[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return a shard's tensors (all, or those of ``names`` that it has) and its decoded metadata."""
    metadata = read_shard_metadata(path)
    with safe_open(str(path), framework="pt") as handle:
        wanted = [name for name in handle.keys() if names is None or name in names]
        tensors = {name: handle.get_tensor(name) for name in wanted}
    return tensors, metadata


def find_shards(directory: str | os.PathLike) -> dict[int, Path]:
    """Return the finished shards of ``directory`` by number (temporary files are ignored)."""
    directory = Path(directory)
    found = {}
    for path in directory.iterdir() if directory.is_dir() else ():
        match = SHARD_PATTERN.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def check_settings(path: str | os.PathLike, found: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise ``TokenShardError`` when a shard was written with settings that change the codes."""
    differences = [
        f"{key}: {found.get(key)!r} in the file, {value!r} now"
        for key, value in expected.items()
        if key not in _INFORMATIONAL_SETTINGS and found.get(key) != value
    ]
    if differences:
        raise TokenShardError(
            f"{path} was written with other settings ({'; '.join(differences)}); write to another "
            "folder, or delete the folder's shards to start over"
        )


def build_index(
    directory: str | os.PathLike,
    *,
    expected_shards: int | None = None,
    classes: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Describe the shards found in ``directory``: their files, clip counts and skipped videos.

    ``expected_shards`` marks the index ``complete`` when shards 0 .. expected_shards - 1 are
    all there. Raises ``TokenShardError`` when no shard exists or shards disagree on settings.
    """
    shards = find_shards(directory)
    if not shards:
        raise TokenShardError(f"no token shards (shard-NNNNN.safetensors) found in {directory}; run tokenize-dataset")
    records = [read_shard_metadata(path) for path in shards.values()]
    settings = records[0]["settings"]
    for record in records[1:]:
        check_settings(Path(directory) / record["file"], record["settings"], settings)

    total = expected_shards if expected_shards is not None else settings.get("num_shards")
    missing = sorted(set(range(total)) - set(shards)) if total is not None else []
    skipped = [video for record in records for video in record["skipped"]]
    return {
        "format": "larp-video-token-index",
        "version": SHARD_VERSION,
        "settings": settings,
        "complete": not missing,
        "missing_shards": missing,
        "num_shards": len(records),
        "total_clips": sum(record["clips"] for record in records),
        "total_videos": sum(record["end_video"] - record["first_video"] for record in records),
        "skipped_videos": skipped,
        "classes": {str(label): name for label, name in sorted((classes or {}).items())},
        "shards": [{key: record[key] for key in ("file", "shard", "first_video", "end_video", "clips")} for record in records],
    }


def write_index(directory: str | os.PathLike, index: Mapping[str, Any]) -> Path:
    """Write ``index.json`` (and ``classes.txt`` when the index names classes) atomically."""
    directory = Path(directory)
    path = directory / INDEX_NAME
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8"))
    classes = {int(label): name for label, name in index.get("classes", {}).items()}
    if classes and min(classes) >= 0:
        lines = [classes.get(label, "") for label in range(max(classes) + 1)]
        atomic_write(directory / CLASSES_NAME, lambda temporary: temporary.write_text("\n".join(lines) + "\n"))
    return path


def read_index(directory: str | os.PathLike) -> dict[str, Any]:
    """Return ``index.json`` of a token folder, or an index built from the shards found there.

    A folder without ``index.json`` (a run that has not finished every shard) is described from
    its shards, and a warning names the missing ones.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"token folder {directory} not found; write it with `larp tokenize-dataset`")
    path = directory / INDEX_NAME
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    index = build_index(directory)
    if not index["complete"]:
        logger.warning(
            "%s has no %s and lacks shards %s; using the %d shards found",
            directory, INDEX_NAME, index["missing_shards"], index["num_shards"],
        )
    return index
