"""Tokenizing a whole video dataset into token shards, resumably and split across processes.

Clips are chosen per video by ``token_clips.clip_starts`` ("chunks" or "random" mode). With
``flip`` every clip is also tokenized mirrored horizontally (the reference implementation
flips training clips at random). Frame-prediction data also stores the codes of each clip's
first ``conditioning_frames`` frames padded to T by repeating the last of them.

Shards (see ``token_shards``) contain fixed groups of videos. Process ``rank`` of
``world_size`` writes the shards ``s`` with ``s % world_size == rank``. A shard file that
exists with the same settings is skipped, so rerunning the command resumes an interrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from larp_video.config import Config, ConfigError
from larp_video.data.token_clips import CLIP_MODES, VideoClipStream
from larp_video.data.token_shards import (
    ShardContent,
    build_index,
    check_settings,
    find_shards,
    num_shards,
    read_shard_metadata,
    remove_temporary_files,
    settings_sha256,
    shard_videos,
    shards_for_rank,
    state_dict_sha256,
    write_index,
    write_shard,
)
from larp_video.data.transforms import FITS, conditioning_clip
from larp_video.evaluation.chunks import read_manifest_entries
from larp_video.evaluation.distributed import RankInfo
from larp_video.evaluation.results import file_record
from larp_video.models.tokenizer import LARPTokenizer
from larp_video.runtime import PRECISIONS, autocast

logger = logging.getLogger(__name__)



@dataclasses.dataclass
class TokenizeDatasetConfig(Config):
    """Settings of ``tokenize_dataset``. Counts are clips and videos, sizes pixels."""

    manifest: str  # CSV with the header id,path,action,label
    output_dir: str
    mode: str = "random"  # "chunks" or "random"
    clips_per_video: int = 1  # random mode only
    seed: int = 0  # random mode: seed of the clip starts
    shard_size: int = 64  # videos per shard
    fit: str = "crop"
    flip: bool = False  # also tokenize every clip mirrored horizontally
    conditioning_frames: int | None = None  # frame prediction: frames given to the generator
    batch_size: int = 16  # clips per tokenizer forward pass
    precision: str = "fp32"
    workers: int = 0  # video decoding processes
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in CLIP_MODES:
            raise ConfigError(f"mode must be one of {CLIP_MODES}, got {self.mode!r}")
        if self.fit not in FITS:
            raise ConfigError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("clips_per_video", "shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {self.workers}")
        if self.conditioning_frames is not None and self.conditioning_frames < 1:
            raise ConfigError(f"conditioning_frames must be at least 1, got {self.conditioning_frames}")


@dataclasses.dataclass
class _PendingClip:
    video_index: int
    clip_number: int
    start_frame: int
    flipped: bool
    clip: torch.Tensor  # (3, T, S, S)


@dataclasses.dataclass
class _CodedClip:
    clip_number: int
    start_frame: int
    flipped: bool
    indices: torch.Tensor  # (N,)
    condition: torch.Tensor | None  # (N,)


class _ShardAssembler:
    """Collect coded clips per video and write each shard once all of its videos are done."""

    def __init__(self, config: TokenizeDatasetConfig, settings: dict[str, Any], labels: Sequence[int], shards: Sequence[int]):
        self.config = config
        self.settings = settings
        self.labels = list(labels)
        self.videos = {number: shard_videos(number, len(labels), config.shard_size) for number in shards}
        self.remaining = {number: set(videos) for number, videos in self.videos.items()}
        self.coded: dict[int, list[_CodedClip]] = {}
        self.skipped: dict[int, dict[str, Any]] = {}
        self.written: list[int] = []
        self.clips_written = 0

    def shard_of(self, video_index: int) -> int:
        return video_index // self.config.shard_size

    def add(self, clip: _PendingClip, indices: torch.Tensor, condition: torch.Tensor | None) -> None:
        coded = _CodedClip(clip.clip_number, clip.start_frame, clip.flipped, indices, condition)
        self.coded.setdefault(clip.video_index, []).append(coded)

    def finish_video(self, video_index: int, error: str | None, path: str) -> None:
        if error is not None:
            logger.warning("skipping video %d (%s): %s", video_index, path, error)
            self.coded.pop(video_index, None)
            self.skipped[video_index] = {"video_index": video_index, "path": path, "reason": error}
        self.remaining[self.shard_of(video_index)].discard(video_index)

    def ready_shards(self) -> list[int]:
        return [number for number, left in self.remaining.items() if not left and number not in self.written]

    def write(self, number: int) -> None:
        rows = []
        for video_index in self.videos[number]:
            for coded in sorted(self.coded.pop(video_index, []), key=lambda item: (item.clip_number, item.flipped)):
                rows.append((video_index, coded))
        num_tokens = self.settings["num_tokens"]
        indices = torch.stack([coded.indices for _, coded in rows]) if rows else torch.zeros(0, num_tokens, dtype=torch.long)
        condition = None
        if self.config.conditioning_frames is not None:
            condition = torch.stack([coded.condition for _, coded in rows]) if rows else torch.zeros_like(indices)
        content = ShardContent(
            indices=indices,
            labels=torch.tensor([self.labels[video_index] for video_index, _ in rows], dtype=torch.long),
            video_index=torch.tensor([video_index for video_index, _ in rows], dtype=torch.long),
            start_frame=torch.tensor([coded.start_frame for _, coded in rows], dtype=torch.long),
            flipped=torch.tensor([coded.flipped for _, coded in rows], dtype=torch.bool),
            condition=condition,
        )
        skipped = [self.skipped[index] for index in self.videos[number] if index in self.skipped]
        write_shard(self.config.output_dir, number, content, self.settings, self.videos[number], skipped)
        self.written.append(number)
        self.clips_written += content.num_clips
        logger.debug("wrote shard %d with %d clips", number, content.num_clips)


def dataset_settings(config: TokenizeDatasetConfig, model: LARPTokenizer, model_name: str, num_videos: int) -> dict[str, Any]:
    """Return the settings recorded in every shard: what decides the codes, plus provenance."""
    tokenizer = model.config
    return {
        "tokenizer": model_name,
        "tokenizer_config_sha256": settings_sha256(tokenizer.to_dict()),
        "tokenizer_weights_sha256": state_dict_sha256(model),
        "clip_frames": tokenizer.num_frames,
        "image_size": tokenizer.image_size,
        "num_tokens": tokenizer.num_tokens,
        "codebook_size": tokenizer.codebook_size,
        "manifest": str(config.manifest),
        "manifest_sha256": file_record(config.manifest)["sha256"],
        "num_videos": num_videos,
        "mode": config.mode,
        "clips_per_video": config.clips_per_video if config.mode == "random" else None,
        "seed": config.seed if config.mode == "random" else None,
        "shard_size": config.shard_size,
        "num_shards": num_shards(num_videos, config.shard_size),
        "fit": config.fit,
        "flip": config.flip,
        "frame_prediction": config.conditioning_frames is not None,
        "conditioning_frames": config.conditioning_frames,
        "precision": config.precision,
    }


def tokenize_dataset(
    config: TokenizeDatasetConfig,
    model: LARPTokenizer,
    model_name: str = "",
    rank: RankInfo | None = None,
) -> dict[str, Any]:
    """Tokenize this rank's shards of ``config.manifest`` into ``config.output_dir``.

    Processes never wait for each other: each one, torchrun rank or separate job, writes its
    shards and then ``index.json`` if it finds every shard present, which the one that finishes
    last does. So a rank with few shards left (after a restart) never waits in a collective call
    that could time out. Returns a summary: shards written and skipped, clips written,
    unreadable videos, and the index path when this process wrote it.
    """
    rank = rank or RankInfo.current()
    entries = read_manifest_entries(config.manifest)
    clip_frames = model.config.num_frames
    if config.conditioning_frames is not None and config.conditioning_frames >= clip_frames:
        raise ConfigError(
            f"conditioning_frames {config.conditioning_frames} must be smaller than the tokenizer's clip "
            f"length {clip_frames}"
        )
    settings = dataset_settings(config, model, model_name, len(entries))
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    mine = shards_for_rank(settings["num_shards"], rank.rank, rank.world_size)
    removed = remove_temporary_files(output, mine)
    if removed:
        logger.info("deleted %d temporary files of interrupted shard writes", removed)
    existing = find_shards(output)
    for number in mine:
        if number in existing:
            check_settings(existing[number], read_shard_metadata(existing[number])["settings"], settings)
    pending = [number for number in mine if number not in existing]
    logger.info(
        "rank %d of %d: %d shards to write, %d already written",
        rank.rank, rank.world_size, len(pending), len(mine) - len(pending),
    )

    assembler = _ShardAssembler(config, settings, [entry.label for entry in entries], pending)
    videos = [(index, str(entries[index].path)) for number in pending for index in assembler.videos[number]]
    _encode_stream(config, model, videos, assembler, show_progress=config.progress and rank.is_main)

    index_path = _finish_index(config, entries, settings["num_shards"])
    return {
        "shards_written": len(assembler.written),
        "shards_skipped": len(mine) - len(pending),
        "clips_written": assembler.clips_written,
        "skipped_videos": list(assembler.skipped.values()),
        "index": str(index_path) if index_path else None,
    }


def _encode_stream(
    config: TokenizeDatasetConfig,
    model: LARPTokenizer,
    videos: list[tuple[int, str]],
    assembler: _ShardAssembler,
    show_progress: bool,
) -> None:
    if not videos:
        return
    stream = VideoClipStream(
        videos,
        model.config.num_frames,
        model.config.image_size,
        fit=config.fit,
        mode=config.mode,
        clips_per_video=config.clips_per_video,
        seed=config.seed,
    )
    # Spawned, not forked, workers: see ClipLoader in evaluation.clip_reading for the PyAV crash.
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=config.workers,
        multiprocessing_context="spawn" if config.workers > 0 else None,
    )
    paths = dict(videos)
    buffer: list[_PendingClip] = []
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(videos), desc="tokenize-dataset", unit="video", disable=not show_progress)
    try:
        for item in loader:
            if item.get("done"):
                # A finished video's clips may still sit in the buffer; it is coded before any
                # shard is written.
                assembler.finish_video(item["video_index"], item["error"], paths[item["video_index"]])
                bar.update(1)
                ready = assembler.ready_shards()
                if ready:
                    _encode(config, model, buffer, assembler)
                    buffer = []
                    for number in ready:
                        assembler.write(number)
                continue

            flips = (False, True) if config.flip else (False,)
            for flipped in flips:
                clip = item["clip"].flip(-1) if flipped else item["clip"]
                buffer.append(_PendingClip(item["video_index"], item["clip_number"], item["start_frame"], flipped, clip))
            if len(buffer) >= config.batch_size:
                _encode(config, model, buffer[: config.batch_size], assembler)
                buffer = buffer[config.batch_size :]
    finally:
        bar.close()
        model.train(was_training)


def _encode(config: TokenizeDatasetConfig, model: LARPTokenizer, clips: list[_PendingClip], assembler: _ShardAssembler) -> None:
    """Code ``clips`` (and their conditioning clips) and hand the codes to the assembler."""
    # Clips of a video that failed later are coded too; the assembler has already dropped the
    # video, so their codes are discarded here.
    clips = [clip for clip in clips if clip.video_index not in assembler.skipped]
    for start in range(0, len(clips), config.batch_size):
        batch = clips[start : start + config.batch_size]
        videos = torch.stack([clip.clip for clip in batch]).to(model.device)  # (B, 3, T, S, S)
        with torch.inference_mode(), autocast(model.device, config.precision):
            indices = model.encode(videos).indices.cpu()  # (B, N)
            condition = None
            if config.conditioning_frames is not None:
                condition = model.encode(conditioning_clip(videos, config.conditioning_frames)).indices.cpu()
        for row, clip in enumerate(batch):
            assembler.add(clip, indices[row], None if condition is None else condition[row])


def _finish_index(config: TokenizeDatasetConfig, entries, total_shards: int) -> Path | None:
    classes = {entry.label: entry.action for entry in entries if entry.label >= 0 and entry.action}
    index = build_index(config.output_dir, expected_shards=total_shards, classes=classes)
    if not index["complete"]:
        logger.info(
            "index.json not written yet: shards %s are missing; the process that writes the last shard writes it",
            index["missing_shards"],
        )
        return None
    return write_index(config.output_dir, index)
