"""FVD protocols on drawn real chunks: UCF-101 generation (gFVD) and Kinetics-600 frame prediction.

Both protocols draw ``num_chunks`` non-overlapping ``frames``-frame chunks from a manifest with
a seed (``chunks.plan_chunks``) and compare their I3D features with those of a folder of
generated videos. A generator is conditioned on the plan: on each chunk's label (generation)
or on its first frames (frame prediction). ``write_chunk_plan`` writes the plan alone.

- Generation: real chunks and generated videos are resized (short side) and centre-cropped
  to ``clip_size`` (128 in the reference implementation).
- Frame prediction: real chunks are fitted to ``clip_size`` and then resized to ``fvd_size``
  (64); generated videos are fitted to ``fvd_size`` directly. I3D resizes both to 224.

The reconstruction protocol (rFVD) is in ``reconstruction_protocol``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from larp_video.config import Config
from larp_video.data.transforms import tensor_to_frames
from larp_video.evaluation.chunks import (
    PlannedChunk,
    ProtocolError,
    enumerate_chunks,
    plan_chunks,
    read_manifest_entries,
    read_plan,
    write_plan,
)
from larp_video.evaluation.clip_reading import ChunkClips, FrameCounts, SampleClips, list_sample_files, make_loader
from larp_video.evaluation.distributed import RankInfo, barrier, gather_lists, shard
from larp_video.evaluation.fvd import FeatureStatistics, RankDeficientCovarianceWarning, fvd
from larp_video.evaluation.results import environment_record, file_record, weights_record, write_results

logger = logging.getLogger(__name__)

PROTOCOLS = ("generation", "frame-prediction")
CHUNK_RULE = (
    "all non-overlapping chunks [i*F, (i+1)*F) of every video with i < frames // F, videos in the order of their "
    "manifest path; random.Random(seed).sample(range(available), count), as the reference implementation's sample.py"
)
CHUNK_RULE_WITH_REPLACEMENT = CHUNK_RULE.replace(
    ".sample(range(available), count)", ".choices(range(available), k=count)"
)
FVD_DEFINITION = (
    "Frechet distance between Gaussians fitted to the 400 I3D Kinetics-400 logits (float64 sums, biased covariance)"
)


@dataclasses.dataclass
class ChunkProtocolConfig(Config):
    """Settings of the generation and frame-prediction FVD protocols; sizes are in pixels."""

    protocol: str
    manifest: str
    output_dir: str
    samples: str | None = None  # folder of generated videos; None only when writing the plan
    num_chunks: int = 10_000
    seed: int = 42
    frames: int = 16  # F, frames per chunk and per generated clip
    clip_size: int = 128  # real chunks: short side resized to this, then centre-cropped
    fvd_size: int | None = None  # resolution at which both sets enter I3D; None: clip_size
    with_replacement: bool = False
    plan: str | None = None  # plan CSV from an earlier run, to skip counting frames
    conditioning_frames: int | None = None  # frame prediction: frames given to the generator
    i3d: str = "auto"
    real_stats: str | None = None  # .npz or .safetensors cache of the real features
    batch_size: int = 8
    workers: int = 0
    write_real_clips: str | None = None  # folder for the real chunks as mp4 files, as they enter I3D
    progress: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ProtocolError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        for name in ("num_chunks", "frames", "clip_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ProtocolError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.conditioning_frames is not None and not 0 < self.conditioning_frames < self.frames:
            raise ProtocolError(
                f"conditioning_frames must be between 1 and frames - 1 = {self.frames - 1}, "
                f"got {self.conditioning_frames}"
            )

    @classmethod
    def for_generation(cls, **values: Any) -> ChunkProtocolConfig:
        """UCF-101 class-conditional generation: 10,000 chunks of the train list, seed 42, at 128 x 128."""
        return cls.from_dict({"protocol": "generation", **values})

    @classmethod
    def for_frame_prediction(cls, **values: Any) -> ChunkProtocolConfig:
        """Kinetics-600 frame prediction: 50,000 chunks of the val list, seed 42, compared at 64 x 64."""
        defaults = {"protocol": "frame-prediction", "num_chunks": 50_000, "fvd_size": 64, "conditioning_frames": 5}
        return cls.from_dict({**defaults, **values})

    @property
    def resolution(self) -> int:
        return self.fvd_size or self.clip_size


# ---------------------------------------------------------------------------------------------
# Shared steps (also used by the reconstruction protocol)
# ---------------------------------------------------------------------------------------------


def check_clip_length(frames: int, extractor: torch.nn.Module) -> None:
    """Raise ProtocolError when clips of ``frames`` frames are too short for the feature network."""
    minimum = getattr(extractor, "min_frames", 1)
    if frames < minimum:
        raise ProtocolError(
            f"I3D needs clips of at least {minimum} frames, but the protocol was asked for {frames} frames; "
            f"pass --frames {minimum} or more (the published protocols use 16)"
        )


def load_feature_extractor(source: str, device: torch.device) -> torch.nn.Module:
    from larp_video.evaluation.i3d import load_i3d

    return load_i3d(source, device=device)


def load_cached_statistics(path: str | os.PathLike | None, expected: Mapping[str, str]) -> FeatureStatistics | None:
    """Return the statistics saved at ``path``, or None when there is no such file.

    Raises ProtocolError when the file was made under other protocol parameters.
    """
    if path is None or not Path(path).is_file():
        return None
    statistics = FeatureStatistics.load(path)
    differences = [
        f"{key}: file {statistics.metadata.get(key)!r}, requested {value!r}"
        for key, value in expected.items()
        if statistics.metadata.get(key) != value
    ]
    if differences:
        raise ProtocolError(
            f"the real-feature statistics in {path} were computed under another protocol ({'; '.join(differences)}); "
            "delete the file or pass another --real-stats path"
        )
    logger.info("loaded real-feature statistics of %d clips from %s", statistics.count, path)
    return statistics


def new_statistics(extractor: torch.nn.Module, metadata: Mapping[str, str] | None = None) -> FeatureStatistics:
    return FeatureStatistics(getattr(extractor, "feature_dim", 400), dict(metadata or {}))


def fvd_with_warnings(real: FeatureStatistics, fake: FeatureStatistics) -> tuple[float, list[str]]:
    """Return the FVD and the text of any warning it raised (e.g. too few clips)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RankDeficientCovarianceWarning)
        value = fvd(real, fake)
    return value, [str(warning.message) for warning in caught]


def statistics_metadata(values: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


def _plan_parameters(config: ChunkProtocolConfig, manifest_sha256: str) -> dict[str, Any]:
    return {
        "manifest_sha256": manifest_sha256,
        "frames": config.frames,
        "num_chunks": config.num_chunks,
        "seed": config.seed,
        "with_replacement": config.with_replacement,
    }


def count_frames(paths: list[str], config: ChunkProtocolConfig, rank: RankInfo) -> list[int]:
    """Decode every video once to count its frames; each rank counts its shard."""
    # NOTE: the reference implementation counts frames with decord. For a file where decord and
    # PyAV disagree, the enumeration shifts and the draw differs from the reference's draw.
    indices = shard(range(len(paths)), rank.rank, rank.world_size)
    loader = make_loader(FrameCounts(paths, indices), batch_size=1, workers=config.workers)
    counted = []
    for batch in tqdm(loader, desc="count frames", unit="video", disable=not (config.progress and rank.is_main)):
        counted.extend(zip(batch["index"], batch["frames"]))
    counts = dict(gather_lists(counted))
    return [counts[index] for index in range(len(paths))]


def load_or_build_plan(config: ChunkProtocolConfig, rank: RankInfo) -> tuple[list[PlannedChunk], dict[str, Any]]:
    """Return the drawn chunks and the plan's description, reading ``config.plan`` when given."""
    manifest = file_record(config.manifest)
    expected = _plan_parameters(config, manifest["sha256"])
    if config.plan is not None:
        description_path = Path(config.plan).with_suffix(".json")
        if not description_path.is_file():
            raise ProtocolError(
                f"plan {config.plan} has no description {description_path}; write plans with --plan-only"
            )
        description = json.loads(description_path.read_text(encoding="utf-8"))
        differences = [
            f"{key}: plan {description.get(key)!r}, requested {value!r}"
            for key, value in expected.items()
            if description.get(key) != value
        ]
        if differences:
            raise ProtocolError(
                f"plan {config.plan} was drawn with other parameters ({'; '.join(differences)}); "
                "drop --plan or pass matching options"
            )
        return read_plan(config.plan), description

    entries = read_manifest_entries(config.manifest)
    frame_counts = count_frames([str(entry.path) for entry in entries], config, rank)
    plan = plan_chunks(entries, frame_counts, config.frames, config.num_chunks, config.seed, config.with_replacement)
    description = {
        **expected,
        "protocol": config.protocol,
        "manifest": manifest["path"],
        "videos": len(entries),
        "videos_with_chunks": sum(count >= config.frames for count in frame_counts),
        "available_chunks": len(enumerate_chunks(frame_counts, config.frames)),
        "chunk_selection": CHUNK_RULE_WITH_REPLACEMENT if config.with_replacement else CHUNK_RULE,
        "frame_counts": "decoded with PyAV, every frame",
    }
    return plan, description


def save_plan(output_dir: str | os.PathLike, plan: list[PlannedChunk], description: Mapping[str, Any]) -> Path:
    """Write ``plan.csv`` and its description ``plan.json``; returns the CSV path."""
    path = write_plan(Path(output_dir) / "plan.csv", plan)
    path.with_suffix(".json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Protocol runs
# ---------------------------------------------------------------------------------------------


def _real_chunk_statistics(
    config: ChunkProtocolConfig,
    plan: list[PlannedChunk],
    extractor: torch.nn.Module | None,
    metadata: Mapping[str, str],
    rank: RankInfo,
) -> FeatureStatistics | None:
    """Stream this rank's real chunks through I3D (when ``extractor``) and write them as files if asked."""
    statistics = new_statistics(extractor, metadata) if extractor is not None else None
    if extractor is None and config.write_real_clips is None:
        return None

    from larp_video.data.video_io import write_video

    if config.write_real_clips is not None:
        Path(config.write_real_clips).mkdir(parents=True, exist_ok=True)
    dataset = ChunkClips(shard(plan, rank.rank, rank.world_size), config.clip_size, config.resolution)
    loader = make_loader(dataset, config.batch_size, config.workers)
    for batch in tqdm(loader, desc="real chunks", unit="batch", disable=not (config.progress and rank.is_main)):
        if statistics is not None:
            statistics.update(extractor.features(batch["video"], batch_size=config.batch_size))
        if config.write_real_clips is not None:
            for sample, clip in zip(batch["sample"], batch["video"]):
                # crf 0: H.264 without loss beyond the 4:2:0 colour subsampling.
                path = Path(config.write_real_clips) / f"{sample:06d}.mp4"
                write_video(path, tensor_to_frames(clip), fps=25.0, crf=0)
    if statistics is not None:
        statistics.all_reduce()
    return statistics


def write_chunk_plan(config: ChunkProtocolConfig) -> dict[str, Any]:
    """Draw the protocol's chunks and write ``plan.csv`` and ``plan.json`` (and the real clips if asked).

    Returns the plan's description. Under torchrun every rank must call it; rank 0 writes.
    """
    rank = RankInfo.current()
    plan, description = load_or_build_plan(config, rank)
    if rank.is_main:
        save_plan(config.output_dir, plan, description)
    _real_chunk_statistics(config, plan, None, {}, rank)
    barrier()
    return description


def run_chunk_protocol(
    config: ChunkProtocolConfig,
    *,
    device: torch.device | str = "cpu",
    feature_extractor: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Compute the FVD of ``config.samples`` against the drawn real chunks; rank 0 writes the results.

    ``feature_extractor`` replaces I3D (anything with ``features(videos, batch_size)``).
    Returns the results dict, the content of ``results.json``, on every rank.
    """
    started = time.perf_counter()
    rank = RankInfo.current()
    device = torch.device(device)
    if config.samples is None:
        raise ProtocolError("no samples folder was given; pass --samples DIR, or --plan-only to write the plan alone")
    extractor = feature_extractor or load_feature_extractor(config.i3d, device)
    check_clip_length(config.frames, extractor)

    sample_files = list_sample_files(config.samples)
    plan, plan_description = load_or_build_plan(config, rank)
    if len(sample_files) != len(plan):
        raise ProtocolError(
            f"the samples folder {config.samples} contains {len(sample_files)} videos but the protocol draws "
            f"{len(plan)} real chunks; generate one video per plan row, or pass --num-chunks {len(sample_files)}"
        )
    plan_path = save_plan(config.output_dir, plan, plan_description) if rank.is_main else None

    i3d = weights_record(extractor)
    i3d_digest = ",".join(item["sha256"] for item in i3d["files"]) or i3d["origin"]
    metadata = statistics_metadata(
        {**_plan_parameters(config, plan_description["manifest_sha256"]), "protocol": config.protocol,
         "clip_size": config.clip_size, "fvd_size": config.resolution, "i3d": i3d_digest}
    )
    real = load_cached_statistics(config.real_stats, metadata)
    computed = _real_chunk_statistics(config, plan, extractor if real is None else None, metadata, rank)
    if real is None:
        real = computed
        if config.real_stats is not None and rank.is_main:
            Path(config.real_stats).parent.mkdir(parents=True, exist_ok=True)
            real.save(config.real_stats)

    fake = new_statistics(extractor)
    indices = shard(range(len(sample_files)), rank.rank, rank.world_size)
    dataset = SampleClips(sample_files, indices, config.frames, config.resolution)
    loader = make_loader(dataset, config.batch_size, config.workers)
    for batch in tqdm(loader, desc="generated videos", unit="batch", disable=not (config.progress and rank.is_main)):
        fake.update(extractor.features(batch["video"], batch_size=config.batch_size))
    fake.all_reduce()

    value, fvd_warnings = fvd_with_warnings(real, fake)
    results = {
        "protocol": config.protocol,
        "description": _describe(config),
        "metrics": {"fvd": value, "real_clips": real.count, "generated_clips": fake.count},
        "parameters": {
            "manifest": file_record(config.manifest),
            "split": Path(config.manifest).stem,
            "count": config.num_chunks,
            "seed": config.seed,
            "frames": config.frames,
            "resolution": config.resolution,
            "real_clip_size": config.clip_size,
            "chunk_selection": plan_description["chunk_selection"],
            "with_replacement": config.with_replacement,
            "available_chunks": plan_description.get("available_chunks"),
            "plan": file_record(plan_path) if plan_path else None,
            "real_preprocessing": _real_preprocessing(config),
            "samples": {
                "folder": str(config.samples),
                "files": len(sample_files),
                "preprocessing": f"first {config.frames} frames; short side resized to {config.resolution} "
                f"(bilinear, antialiased), centre crop",
            },
            "conditioning_frames": config.conditioning_frames,
            "i3d": i3d,
            "i3d_precision": "fp32",
            "fvd_definition": FVD_DEFINITION,
            "real_statistics": {"path": config.real_stats, "loaded_from_cache": computed is None},
            "batch_size": config.batch_size,
            "world_size": rank.world_size,
        },
        "environment": environment_record(device),
        "wall_time_seconds": round(time.perf_counter() - started, 2),
        "warnings": fvd_warnings,
    }
    if rank.is_main:
        write_results(config.output_dir, results)
    barrier()
    return results


def _real_preprocessing(config: ChunkProtocolConfig) -> str:
    text = (
        f"frames [start, start + {config.frames}); short side resized to {config.clip_size} "
        "(bilinear, antialiased), centre crop"
    )
    if config.resolution != config.clip_size:
        text += f"; then resized to {config.resolution} x {config.resolution} (bilinear, antialiased)"
    return text


def _describe(config: ChunkProtocolConfig) -> str:
    if config.protocol == "generation":
        return (
            f"gFVD: {config.num_chunks} generated videos against {config.num_chunks} real {config.frames}-frame chunks "
            f"drawn with seed {config.seed} from {Path(config.manifest).name}, "
            f"at {config.resolution} x {config.resolution}."
        )
    return (
        f"Frame-prediction FVD: {config.num_chunks} predicted videos (conditioned on the first "
        f"{config.conditioning_frames} frames of each drawn chunk; all {config.frames} frames are compared) against "
        f"the real chunks drawn with seed {config.seed} from {Path(config.manifest).name}, both at "
        f"{config.resolution} x {config.resolution}."
    )
