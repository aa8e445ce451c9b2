"""Sampling videos to files: one mp4 per request, then grids and a JSON record of the run.

Dimension legend: B videos in a batch, N tokens per clip, T frames, S frame side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from larp_video.config import Config, ConfigError
from larp_video.data.transforms import FITS, FrameGeometry, fit_to_model, frames_to_tensor, pad_frames, tensor_to_frames
from larp_video.data.video_io import read_video, write_video
from larp_video.evaluation.distributed import RankInfo, barrier
from larp_video.generation.grids import save_sample_grids
from larp_video.generation.loading import LoadedGenerator
from larp_video.generation.requests import SampleRequest, requests_for_rank, sample_seed
from larp_video.models.sampling import CFG_SCHEDULES
from larp_video.models.tokenizer import LARPTokenizer
from larp_video.runtime import PRECISIONS, autocast

logger = logging.getLogger(__name__)

RECORD_NAME = "samples.json"


@dataclasses.dataclass
class SamplingSettings(Config):
    """Everything that decides the sampled tokens of a request, given the models."""

    cfg_scale: float = 1.0
    cfg_schedule: str = "constant"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    precision: str = "fp32"
    conditioning_frames: int = 5  # frame prediction: real frames given to the generator
    fit: str = "crop"  # frame prediction: how real frames are fitted to the tokenizer

    def __post_init__(self) -> None:
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ConfigError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.fit not in FITS:
            raise ConfigError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.conditioning_frames < 1:
            raise ConfigError(f"conditioning_frames must be at least 1, got {self.conditioning_frames}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be 0 (keep all tokens) or more, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (1 keeps all tokens), got {self.top_p}")


# ---------------------------------------------------------------------------------------------
# Tokens to videos
# ---------------------------------------------------------------------------------------------


def condition_from_frames(
    tokenizer: LARPTokenizer, frames: Sequence[np.ndarray], settings: SamplingSettings
) -> torch.Tensor:
    """Code the given first frames of each video as a frame-prediction condition, (B, N).

    Each uint8 (c, H, W, 3) array is fitted to the tokenizer's frame and padded to its clip
    length by repeating its last frame, the input the generator was trained on.
    """
    config = tokenizer.config
    clips = []
    for given in frames:
        video = frames_to_tensor(given)  # (3, c, H, W)
        geometry = FrameGeometry.compute(video.shape[2], video.shape[3], config.image_size, settings.fit)
        clips.append(pad_frames(fit_to_model(video, geometry), config.num_frames))  # (3, T, S, S)
    batch = torch.stack(clips).to(tokenizer.device)
    with torch.inference_mode(), autocast(tokenizer.device, settings.precision):
        return tokenizer.encode(batch).indices.clone()


def generate_videos(
    generator: torch.nn.Module,
    tokenizer: LARPTokenizer,
    condition: torch.Tensor,
    seeds: Sequence[int],
    settings: SamplingSettings,
    *,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample token sequences with one random stream per row and decode them.

    Returns the tokens (B, N) and the videos (B, 3, T, S, S) in [0, 1], float32.
    """
    device = condition.device
    streams = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    with autocast(device, settings.precision):
        tokens = generator.generate(
            condition,
            cfg_scale=settings.cfg_scale,
            cfg_schedule=settings.cfg_schedule,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            generator=streams,
            progress=progress,
        )
    with torch.no_grad(), autocast(tokenizer.device, settings.precision):
        videos = tokenizer.decode(tokens.to(tokenizer.device))
    return tokens, videos.float().clamp(0.0, 1.0)


def request_conditions(
    requests: Sequence[SampleRequest], loaded: LoadedGenerator, tokenizer: LARPTokenizer, settings: SamplingSettings
) -> torch.Tensor:
    """Return the generator input for ``requests``: (B,) labels, or (B, N) codes of their first frames."""
    device = next(loaded.model.parameters()).device
    if not loaded.model.config.frame_prediction:
        return torch.tensor([request.label for request in requests], dtype=torch.long, device=device)

    from larp_video.evaluation.clip_reading import read_first_frames

    missing = [request.index for request in requests if not request.video]
    if missing:
        raise ConfigError(
            f"samples {missing[:5]} have no conditioning video; a frame-prediction generator samples from a plan "
            "of `larp eval frame-prediction --plan-only` (--plan), or use `larp predict VIDEO`"
        )
    frames = [read_first_frames(request.video, settings.conditioning_frames, request.start_frame) for request in requests]
    return condition_from_frames(tokenizer, frames, settings).to(device)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SamplingJob:
    """A sampling run: the requests, where the files go and how they are written."""

    requests: list[SampleRequest]
    output_dir: str
    settings: SamplingSettings
    batch_size: int = 8
    fps: float = 16.0
    crf: int = 18
    resume: bool = False
    grid_videos: int = 32  # videos shown in grid.gif / grid.png (0: no grids)
    grid_columns: int = 8
    progress: bool = True


def run_sampling(job: SamplingJob, loaded: LoadedGenerator, tokenizer: LARPTokenizer, tokenizer_name: str) -> dict[str, Any]:
    """Write this rank's samples, then, if every sample file exists, the grids and ``samples.json``.

    Every rank of a process group must call it. The ranks wait for each other only at the
    start: the rank that finishes last finds every file and writes the grids and the record, so
    a rank with little left to do (after ``resume``) never waits in a collective call that could
    time out. Without ``job.resume`` a folder that already has sample files is rejected. With it,
    existing files are kept, and the run must use the settings recorded when the folder was
    started. Returns the record (``status`` "complete" when this rank wrote it, else "partial").
    """
    started = time.perf_counter()
    rank = RankInfo.current()
    output = Path(job.output_dir)
    if job.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {job.batch_size}")
    parameters = _parameters(job, loaded, tokenizer_name)
    _check_output_folder(job, output, parameters)
    barrier()
    if rank.is_main:
        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / RECORD_NAME, {"status": "running", "parameters": parameters})
    barrier()

    mine = requests_for_rank(job.requests, rank.rank, rank.world_size)
    pending = [request for request in mine if not (job.resume and (output / request.file_name).is_file())]
    logger.info("rank %d of %d: %d samples to make, %d already written", rank.rank, rank.world_size, len(pending), len(mine) - len(pending))
    bar = tqdm(total=len(pending), desc="sample", unit="video", disable=not (job.progress and rank.is_main))
    try:
        for start in range(0, len(pending), job.batch_size):
            batch = pending[start : start + job.batch_size]
            condition = request_conditions(batch, loaded, tokenizer, job.settings)
            seeds = [sample_seed(job.settings.seed, request.index) for request in batch]
            _, videos = generate_videos(loaded.model, tokenizer, condition, seeds, job.settings)
            for request, video in zip(batch, videos):
                write_video(output / request.file_name, tensor_to_frames(video), job.fps, crf=job.crf)
            bar.update(len(batch))
    finally:
        bar.close()

    record = {"status": "partial", "parameters": parameters, "samples": [_sample_record(job, r) for r in job.requests]}
    missing = [request.file_name for request in job.requests if not (output / request.file_name).is_file()]
    if missing:
        logger.info("rank %d is done; %d samples of other ranks are still missing", rank.rank, len(missing))
        return record
    record["status"] = "complete"
    if job.grid_videos > 0:
        record["grids"] = [str(path) for path in _write_grids(job, output)]
    record["world_size"] = rank.world_size
    record["wall_time_seconds"] = round(time.perf_counter() - started, 2)
    _write_json(output / RECORD_NAME, record)
    return record


def _parameters(job: SamplingJob, loaded: LoadedGenerator, tokenizer_name: str) -> dict[str, Any]:
    return {
        "generator": loaded.name,
        "mode": loaded.model.config.mode,
        "tokenizer": tokenizer_name,
        **job.settings.to_dict(),
        "samples": len(job.requests),
        "fps": job.fps,
        "crf": job.crf,
        "seed_rule": "sample i draws from torch.Generator seeded with sample_seed(seed, i): 63 bits of "
        "SHA-256('{seed}:{i}'); process r of w makes the samples with i % w == r",
    }


def _check_output_folder(job: SamplingJob, output: Path, parameters: dict[str, Any]) -> None:
    existing = sorted(output.glob("*.mp4")) if output.is_dir() else []
    if not existing:
        return
    if not job.resume:
        raise ConfigError(
            f"{output} already contains {len(existing)} videos; pass --resume to continue an interrupted run "
            "with the same settings, or choose an empty folder"
        )
    record_path = output / RECORD_NAME
    if not record_path.is_file():
        raise ConfigError(f"{output} has videos but no {RECORD_NAME}, so its settings are unknown; choose an empty folder")
    recorded = json.loads(record_path.read_text(encoding="utf-8")).get("parameters", {})
    ignored = {"generator", "tokenizer"}  # the same model may be passed under another path
    differences = [
        f"{key}: {recorded.get(key)!r} before, {value!r} now"
        for key, value in parameters.items()
        if key not in ignored and recorded.get(key) != value
    ]
    if differences:
        raise ConfigError(f"--resume with other settings than {output} was started with: {'; '.join(differences)}")


def _sample_record(job: SamplingJob, request: SampleRequest) -> dict[str, Any]:
    record = {
        "index": request.index,
        "file": request.file_name,
        "label": request.label,
        "class": request.class_name,
        "seed": sample_seed(job.settings.seed, request.index),
    }
    if request.video:
        record.update(video=request.video, start_frame=request.start_frame)
    return record


def _write_grids(job: SamplingJob, output: Path) -> list[Path]:
    """Write grid.gif and grid.png through temporary names, because two ranks that finish
    together may both write them."""
    shown = job.requests[: job.grid_videos]
    videos = [read_video(output / request.file_name)[0] for request in shown]
    labels = [f"{request.index}: {request.class_name}" if request.class_name else str(request.index) for request in shown]
    temporary = save_sample_grids(output / f".grid-{os.getpid()}", videos, labels, columns=job.grid_columns, fps=job.fps)
    final = []
    for path in temporary:
        target = output / f"grid{path.suffix}"
        os.replace(path, target)
        final.append(target)
    return final


def _write_json(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
