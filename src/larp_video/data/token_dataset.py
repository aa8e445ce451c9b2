"""A dataset over the token shards of ``larp tokenize-dataset``, for generator training."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from larp_video.data.token_shards import TokenShardError, check_settings, read_index, read_shard

logger = logging.getLogger(__name__)

# safetensors dtype names of the tensors that can be memory-mapped.
_NUMPY_DTYPES = {"I64": np.int64, "I32": np.int32, "I16": np.int16}
# Per-clip fields read into memory; the token ids stay in the files.
_IN_MEMORY = ("labels", "video_index", "start_frame", "flipped")


def safetensors_memmap(path: str | os.PathLike, name: str) -> np.memmap:
    """Map tensor ``name`` of a safetensors file read-only, without reading it.

    A safetensors file is an 8-byte little-endian header length, a JSON header that gives each
    tensor's dtype, shape and byte range, then the data. Raises ``TokenShardError`` for a tensor
    that is missing, empty or of another dtype.
    """
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    info = header.get(name)
    if info is None or info["dtype"] not in _NUMPY_DTYPES or 0 in info["shape"]:
        raise TokenShardError(f"{path} has no non-empty integer tensor {name!r} to map")
    start, _ = info["data_offsets"]
    dtype = _NUMPY_DTYPES[info["dtype"]]
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_length + start, shape=tuple(info["shape"]))


class TokenDataset(Dataset):
    """Every clip of one or more token folders.

    The token ids (``indices`` and ``condition``, the bulk of the data) stay memory-mapped in
    the shard files, so processes on one machine share them through the page cache. The small
    per-clip fields are read into memory. Items are dicts with ``tokens`` (N,) int64, ``label``
    (scalar; -1 when the manifest had none) and, for frame-prediction folders, ``condition``
    (N,) int64. ``videos`` keeps only the clips of those sorted-manifest positions (a
    validation split by video).

    Attributes: ``settings`` (of the first folder, see ``token_shards``), ``class_names``
    (label -> name), and per clip ``labels``, ``video_index``, ``start_frame`` and ``flipped``.
    """

    def __init__(self, directories: str | os.PathLike | Sequence[str | os.PathLike], videos: Sequence[int] | None = None):
        if isinstance(directories, (str, os.PathLike)):
            directories = [directories]
        if not directories:
            raise ValueError("TokenDataset needs at least one token folder")
        self.directories = [Path(directory) for directory in directories]

        self.settings: dict[str, Any] = {}
        self.class_names: dict[int, str] = {}
        self.shard_paths: list[Path] = []
        fields: dict[str, list[torch.Tensor]] = {}
        for directory in self.directories:
            index = read_index(directory)
            if not self.settings:
                self.settings = index["settings"]
            else:
                _check_compatible(directory, index["settings"], self.settings)
            self.class_names.update({int(label): name for label, name in index.get("classes", {}).items()})
            for shard in index["shards"]:
                if shard["clips"] == 0:
                    continue
                tensors, _ = read_shard(directory / shard["file"], _IN_MEMORY)
                self.shard_paths.append(directory / shard["file"])
                fields.setdefault("shard", []).append(torch.full((shard["clips"],), len(self.shard_paths) - 1))
                fields.setdefault("row", []).append(torch.arange(shard["clips"]))
                for name, tensor in tensors.items():
                    fields.setdefault(name, []).append(tensor)

        if not fields:
            raise TokenShardError(f"the token folders {[str(d) for d in self.directories]} contain no clips")
        columns = {name: torch.cat(values) for name, values in fields.items()}
        if videos is not None:
            keep = torch.isin(columns["video_index"], torch.as_tensor(list(videos), dtype=torch.long))
            columns = {name: column[keep] for name, column in columns.items()}
        if columns["row"].numel() == 0:
            raise TokenShardError(
                f"the token folders {[str(d) for d in self.directories]} contain no clips of the videos {list(videos or [])}"
            )

        self.frame_prediction = bool(self.settings.get("frame_prediction"))
        self._shard = columns["shard"]
        self._row = columns["row"]
        self.labels = columns["labels"]  # (n,)
        self.video_index = columns["video_index"]
        self.start_frame = columns["start_frame"]
        self.flipped = columns["flipped"]
        self._maps: list[dict[str, np.memmap]] | None = None
        logger.info("found %d token clips in %s", len(self), ", ".join(str(d) for d in self.directories))

    @property
    def num_tokens(self) -> int:
        return int(self.settings["num_tokens"])

    @property
    def codebook_size(self) -> int:
        return int(self.settings["codebook_size"])

    @property
    def num_classes(self) -> int:
        """One more than the largest label (0 when no clip has a label)."""
        return int(self.labels.max()) + 1 if self.labels.numel() else 0

    def video_positions(self) -> list[int]:
        """Return the sorted distinct sorted-manifest positions of the videos in this dataset."""
        return sorted(set(self.video_index.tolist()))

    def __len__(self) -> int:
        return self._row.shape[0]

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        if self._maps is None:
            names = ("indices", "condition") if self.frame_prediction else ("indices",)
            self._maps = [{name: safetensors_memmap(path, name) for name in names} for path in self.shard_paths]
        maps, row = self._maps[int(self._shard[item])], int(self._row[item])
        sample = {"tokens": torch.from_numpy(np.array(maps["indices"][row], dtype=np.int64)), "label": self.labels[item]}
        if self.frame_prediction:
            sample["condition"] = torch.from_numpy(np.array(maps["condition"][row], dtype=np.int64))
        return sample

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each process (e.g. spawned data loader workers).
        return {**self.__dict__, "_maps": None}


def _check_compatible(directory: Path, found: dict[str, Any], expected: dict[str, Any]) -> None:
    """Token folders used together must share the tokenizer, clip shape and kind of data."""
    keys = ("tokenizer_config_sha256", "tokenizer_weights_sha256", "num_tokens", "codebook_size", "frame_prediction")
    check_settings(directory, {key: found.get(key) for key in keys}, {key: expected.get(key) for key in keys})
