"""Clip selection of the evaluation protocols: manifests, seeded clip starts and chunk draws.

Everything here is a pure function of the manifest, the frame counts and the seed, so two runs
(or two ranks) that agree on those inputs select the same clips.

- Videos are ordered by their manifest path string, as written in the CSV. The reference
  implementation sorts its video list the same way before it indexes anything.
- Reconstruction (rFVD) takes one clip per video. Its start is drawn from
  ``random.Random(seed * 1_000_003 + index)``, where ``index`` is the video's position in the
  sorted manifest, so it is the clip that ``VideoClipDataset(random_clips=False, seed=seed)``
  gives for that index.
- Generation and frame prediction enumerate every non-overlapping chunk of every video: video
  by video in sorted order, chunks ``[i * F, (i + 1) * F)`` for ``i < frames // F``. They then
  draw chunk numbers with ``random.Random(seed).sample(range(available), count)``, which is the
  reference implementation's draw (its ``sample.py`` with ``dataset_split_seed``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import random
from collections.abc import Sequence
from pathlib import Path

# Multiplier that spreads per-video seeds apart; VideoClipDataset uses the same formula.
_VIDEO_SEED_STRIDE = 1_000_003
PLAN_COLUMNS = ("sample", "video_index", "video_id", "path", "start_frame", "num_frames", "label", "action")


class ProtocolError(ValueError):
    """An evaluation request that breaks its protocol (a count, size or file that does not fit)."""


class ManifestError(ValueError):
    """A video manifest that is missing or is not an ``id,path,action,label`` CSV."""


class NotEnoughChunksError(ProtocolError):
    """More chunks were requested than the videos contain, without drawing with replacement."""


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One row of an ``id,path,action,label`` manifest; ``path`` is resolved, ``entry`` as written."""

    video_id: str
    entry: str
    path: Path
    action: str
    label: int


@dataclasses.dataclass(frozen=True)
class PlannedChunk:
    """A chunk of ``num_frames`` frames from ``start_frame`` of one manifest video.

    ``sample`` is the chunk's position in the draw: sample i of a generator conditioned on
    this plan uses ``label`` (generation) or the first frames of this chunk (frame prediction).
    """

    sample: int
    video_index: int
    video_id: str
    path: str
    start_frame: int
    num_frames: int
    label: int
    action: str


def read_manifest_entries(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read an ``id,path,action,label`` CSV and return its rows sorted by the path as written.

    Paths are resolved relative to the manifest's folder unless absolute. A missing ``label``
    becomes -1 and a missing ``id`` becomes the row number.
    """
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"manifest {path} is a directory; pass the CSV file with the header id,path,action,label")
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or []):
            first_line = ",".join(reader.fieldnames or []) or "empty"
            raise ManifestError(
                f"manifest {path} has no 'path' column (its first line is {first_line!r}); "
                "its first line must be the header id,path,action,label"
            )
        entries = []
        for row_number, row in enumerate(reader):
            entry = row["path"].strip()
            resolved = Path(entry).expanduser()
            if not resolved.is_absolute():
                resolved = path.parent / resolved
            label_text = (row.get("label") or "").strip()
            if label_text and not label_text.lstrip("-").isdigit():
                raise ManifestError(
                    f"manifest {path} line {reader.line_num}: label {label_text!r} is not an integer class id"
                )
            entries.append(
                ManifestEntry(
                    video_id=(row.get("id") or "").strip() or str(row_number),
                    entry=entry,
                    path=resolved,
                    action=(row.get("action") or "").strip(),
                    label=int(label_text) if label_text else -1,
                )
            )
    if not entries:
        raise ManifestError(f"manifest {path} lists no videos; add one id,path,action,label row per video")
    return sorted(entries, key=lambda item: item.entry)


def select_videos(num_available: int, num_videos: int | None, seed: int) -> list[int]:
    """Return the sorted positions of the videos to evaluate: all of them, or a seeded subset."""
    if num_videos is None or num_videos == num_available:
        return list(range(num_available))
    if not 1 <= num_videos <= num_available:
        raise ValueError(
            f"num_videos must be between 1 and the {num_available} videos of the manifest, got {num_videos}"
        )
    return sorted(random.Random(seed).sample(range(num_available), num_videos))


def clip_start(seed: int, video_index: int, total_frames: int, num_frames: int) -> int:
    """Return the seeded start frame of video ``video_index``'s evaluation clip.

    A video with at most ``num_frames`` frames starts at 0 (its clip is padded later).
    """
    rng = random.Random(seed * _VIDEO_SEED_STRIDE + video_index)
    return rng.randint(0, max(0, total_frames - num_frames))


def enumerate_chunks(frame_counts: Sequence[int], chunk_frames: int) -> list[tuple[int, int]]:
    """Return (video position, start frame) of every non-overlapping chunk, video by video.

    A video of n frames has ``n // chunk_frames`` chunks; its last ``n % chunk_frames`` frames
    and any video shorter than one chunk contribute none.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    chunks = []
    for video, count in enumerate(frame_counts):
        chunks.extend((video, group * chunk_frames) for group in range(count // chunk_frames))
    return chunks


def draw_chunks(num_available: int, count: int, seed: int, with_replacement: bool = False) -> list[int]:
    """Return ``count`` chunk numbers in [0, num_available) drawn with ``random.Random(seed)``.

    Without replacement this is ``random.Random(seed).sample(range(num_available), count)``, as
    in the reference implementation, and it raises ``NotEnoughChunksError`` when ``count`` is
    larger than ``num_available``. With replacement it is ``choices(range(num_available), k=count)``.
    """
    if count < 1:
        raise ValueError(f"the number of chunks must be at least 1, got {count}")
    if num_available < 1:
        raise NotEnoughChunksError("the videos contain no complete chunk; use longer videos or fewer frames per chunk")
    rng = random.Random(seed)
    if with_replacement:
        return rng.choices(range(num_available), k=count)
    if count > num_available:
        raise NotEnoughChunksError(
            f"{count} chunks were requested but the videos contain only {num_available} non-overlapping chunks; "
            f"request at most {num_available} chunks, or pass --with-replacement to draw chunks more than once"
        )
    return rng.sample(range(num_available), count)


def plan_chunks(
    entries: Sequence[ManifestEntry],
    frame_counts: Sequence[int],
    chunk_frames: int,
    count: int,
    seed: int,
    with_replacement: bool = False,
) -> list[PlannedChunk]:
    """Enumerate all chunks of ``entries`` (with their decoded ``frame_counts``) and draw ``count``."""
    if len(entries) != len(frame_counts):
        raise ValueError(f"got {len(entries)} manifest entries but {len(frame_counts)} frame counts")
    chunks = enumerate_chunks(frame_counts, chunk_frames)
    drawn = draw_chunks(len(chunks), count, seed, with_replacement)
    plan = []
    for sample, chunk_number in enumerate(drawn):
        video, start = chunks[chunk_number]
        entry = entries[video]
        plan.append(
            PlannedChunk(sample, video, entry.video_id, str(entry.path), start, chunk_frames, entry.label, entry.action)
        )
    return plan


def write_plan(path: str | os.PathLike, plan: Sequence[PlannedChunk]) -> Path:
    """Write a plan as CSV with the columns of ``PLAN_COLUMNS``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PLAN_COLUMNS)
        writer.writeheader()
        for chunk in plan:
            writer.writerow(dataclasses.asdict(chunk))
    return path


def read_plan(path: str | os.PathLike) -> list[PlannedChunk]:
    """Read a plan written by ``write_plan``."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"plan {path} not found; write one with `larp eval ... --plan-only`")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(PLAN_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ProtocolError(
                f"plan {path} lacks the columns {sorted(missing)}; write plans with `larp eval ... --plan-only`"
            )
        integers = {"sample", "video_index", "start_frame", "num_frames", "label"}
        return [
            PlannedChunk(**{name: int(row[name]) if name in integers else row[name] for name in PLAN_COLUMNS})
            for row in reader
        ]
