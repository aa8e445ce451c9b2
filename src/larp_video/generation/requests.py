"""Sample requests: their numbers, classes, seeds and the processes that make them.

Every sample has an index. Its file is ``{index:06d}.mp4`` and its random stream comes from
``sample_seed(seed, index)``, so its random draws do not depend on the batch or the process
that makes it. Under torchrun, process ``rank`` of ``world_size`` makes the samples with
``index % world_size == rank``. The files equal those of one process wherever the model
computes each row the same in any batch, which the tests check on the CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from larp_video.evaluation.chunks import PlannedChunk, read_manifest_entries


class SamplingRequestError(ValueError):
    """A class name, class id or plan that the generator cannot serve."""


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """One video to generate. ``label`` is -1 for the null class; ``video`` and ``start_frame``
    name the real chunk whose first frames condition a frame-prediction generator."""

    index: int
    label: int = -1
    class_name: str = ""
    video: str = ""
    start_frame: int = 0

    @property
    def file_name(self) -> str:
        return sample_file_name(self.index)


def sample_file_name(index: int) -> str:
    """Return the file name of sample ``index``, the name ``larp eval`` plans use (``000042.mp4``)."""
    return f"{index:06d}.mp4"


def sample_seed(seed: int, index: int) -> int:
    """Return the seed of sample ``index``: 63 bits of SHA-256 over ``"{seed}:{index}"``.

    Nearby seeds and indices give unrelated streams, unlike ``seed + index``.
    """
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def requests_for_rank(requests: Sequence[SampleRequest], rank: int, world_size: int) -> list[SampleRequest]:
    """Return the requests that process ``rank`` makes: those with ``index % world_size == rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank {rank} of {world_size}")
    return [request for request in requests if request.index % world_size == rank]


def class_names_from_manifest(path: str | os.PathLike) -> dict[int, str]:
    """Return label -> action name from an ``id,path,action,label`` manifest."""
    names: dict[int, str] = {}
    for entry in read_manifest_entries(path):
        if entry.label >= 0 and entry.action:
            names.setdefault(entry.label, entry.action)
    return names


def class_names_from_file(path: str | os.PathLike) -> dict[int, str]:
    """Read a ``classes.txt``: line i names class i; empty lines leave a class unnamed."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {label: name.strip() for label, name in enumerate(lines) if name.strip()}


def resolve_class(spec: str, class_names: Mapping[int, str], num_classes: int) -> int:
    """Turn a class id (``"3"``), ``"null"`` or a class name (case-insensitive) into a label."""
    text = spec.strip()
    if text.lower() == "null":
        return -1
    if text.lstrip("-").isdigit():
        label = int(text)
        if not 0 <= label < num_classes:
            raise SamplingRequestError(
                f"class id {label} is out of range: the generator has classes 0 to {num_classes - 1} "
                "(or 'null' for the unconditional model)"
            )
        return label
    matches = [label for label, name in class_names.items() if name.lower() == text.lower()]
    if not matches:
        known = ", ".join(f"{label}={name}" for label, name in sorted(class_names.items())) or "none"
        raise SamplingRequestError(
            f"unknown class {spec!r}; known class names: {known}. Pass a class id, or name the classes with "
            "--manifest (its action column) or --classes classes.txt"
        )
    return matches[0]


def class_requests(
    labels: Sequence[int], samples_per_class: int, class_names: Mapping[int, str]
) -> list[SampleRequest]:
    """Number ``samples_per_class`` samples of each label, label after label in the given order."""
    if samples_per_class < 1:
        raise SamplingRequestError(f"the number of samples per class must be at least 1, got {samples_per_class}")
    requests = []
    for label in labels:
        name = "null" if label < 0 else class_names.get(label, str(label))
        for _ in range(samples_per_class):
            requests.append(SampleRequest(len(requests), label, name))
    return requests


def plan_requests(plan: Sequence[PlannedChunk]) -> list[SampleRequest]:
    """Make one request per plan row, numbered by the row's ``sample``, with its label and chunk."""
    requests = [
        SampleRequest(chunk.sample, chunk.label, chunk.action or str(chunk.label), chunk.path, chunk.start_frame)
        for chunk in plan
    ]
    indices = [request.index for request in requests]
    if len(set(indices)) != len(indices):
        raise SamplingRequestError("the plan numbers some samples twice; write plans with `larp eval ... --plan-only`")
    return requests
