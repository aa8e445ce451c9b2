"""The reconstruction protocol: rFVD, PSNR, SSIM, LPIPS and token statistics of a tokenizer.

One clip per manifest video (UCF-101's train list in the published protocol): ``frames``
consecutive frames from a seeded start (``chunks.clip_start``), resized (short side) and
centre-cropped to the model's resolution, padded by repeating the last frame when the video is
shorter. The tokenizer encodes each clip with deterministic (argmax) codes and decodes it.
A clip longer than the model's clip length is coded as consecutive windows, the last one padded.

Per clip: PSNR (mean over frames of per-frame PSNR), PSNR of the clip's MSE over all its
frames (the reference implementation's convention), SSIM, LPIPS-VGG and MSE, on the frames
before padding. Over the set: the means of those, rFVD between the I3D features of the clips
and of their reconstructions, codebook usage and perplexity, and bits per pixel.

Dimension legend: B clips, T frames, W windows per clip, S frame side, N tokens per window.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from larp_video.config import Config
from larp_video.evaluation.chunks import ProtocolError, read_manifest_entries, select_videos
from larp_video.evaluation.clip_reading import ReconstructionClips, make_loader
from larp_video.evaluation.distributed import RankInfo, barrier, gather_lists, shard
from larp_video.evaluation.metrics import CodebookUsage, lpips_per_video, psnr_per_video, ssim_per_video
from larp_video.evaluation.protocols import (
    FVD_DEFINITION,
    check_clip_length,
    fvd_with_warnings,
    load_cached_statistics,
    load_feature_extractor,
    new_statistics,
    statistics_metadata,
)
from larp_video.evaluation.report import ExtremeClips, write_report
from larp_video.evaluation.results import environment_record, file_record, model_record, weights_record, write_results
from larp_video.runtime import PRECISIONS, autocast

CLIP_RULE = (
    "one clip per video: start = random.Random(seed * 1000003 + i).randint(0, max(0, frames_in_video - F)), "
    "i = the video's position in the manifest sorted by path; shorter videos padded by repeating the last frame"
)
CLIP_COLUMNS = (
    "video_index", "video_id", "path", "start_frame", "frames_read", "psnr", "psnr_video_mse", "ssim", "lpips", "mse"
)


@dataclasses.dataclass
class ReconstructionConfig(Config):
    """Settings of the reconstruction protocol."""

    manifest: str
    output_dir: str
    num_videos: int | None = None  # None: every video; else a subset drawn with random.Random(seed)
    seed: int = 42
    frames: int = 16  # F, frames per clip
    size: int | None = None  # None: the model's resolution; other values must equal it
    batch_size: int = 4  # clips per forward pass
    precision: str = "fp32"  # tokenizer precision; I3D and LPIPS always run in float32
    i3d: str = "auto"
    real_stats: str | None = None  # .npz or .safetensors cache of the original clips' features
    workers: int = 0
    report_clips: int = 4  # k best and k worst clips shown in the report; 0 writes no report
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ProtocolError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.frames < 1 or self.batch_size < 1:
            raise ProtocolError(f"frames and batch_size must be at least 1, got {self.frames} and {self.batch_size}")


def reconstruct_clips(model: torch.nn.Module, clips: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode and decode (B, 3, T, S, S) clips window by window with argmax codes.

    Returns the float32 reconstructions clamped to [0, 1], (B, 3, T, S, S), and the indices,
    (B, W * N) int64.
    """
    batch, _, frames, size, _ = clips.shape
    window = model.config.num_frames
    windows = math.ceil(frames / window)
    padded = torch.cat([clips, clips[:, :, -1:].expand(-1, -1, windows * window - frames, -1, -1)], dim=2)
    # (B, 3, W*T_w, S, S) -> (B*W, 3, T_w, S, S)
    stacked = padded.view(batch, 3, windows, window, size, size).transpose(1, 2)
    stacked = stacked.reshape(batch * windows, 3, window, size, size)
    with torch.no_grad(), autocast(clips.device, precision):
        encoded = model.encode(stacked)
        decoded = model.decode_codes(encoded.codes)
    decoded = decoded.float().clamp_(0.0, 1.0)
    # (B*W, 3, T_w, S, S) -> (B, 3, W*T_w, S, S), then drop the padding frames
    decoded = decoded.view(batch, windows, 3, window, size, size).transpose(1, 2)
    decoded = decoded.reshape(batch, 3, windows * window, size, size)
    return decoded[:, :, :frames].contiguous(), encoded.indices.view(batch, -1)


def clip_metrics(
    original: torch.Tensor, reconstruction: torch.Tensor, lpips_model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Return (B,) PSNR, clip-MSE PSNR, SSIM, LPIPS and MSE of (B, 3, T, S, S) clips in [0, 1]."""
    mse = (original - reconstruction).pow(2).mean(dim=(1, 2, 3, 4))
    return {
        "psnr": psnr_per_video(original, reconstruction),
        "psnr_video_mse": psnr_per_video(original, reconstruction, per_frame=False),
        "ssim": ssim_per_video(original, reconstruction),
        "lpips": lpips_per_video(lpips_model, original, reconstruction),
        "mse": mse,
    }


def run_reconstruction(
    config: ReconstructionConfig,
    model: torch.nn.Module,
    model_name: str,
    *,
    feature_extractor: torch.nn.Module | None = None,
    lpips_model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Run the protocol with ``model`` on its device; rank 0 writes results, clips.csv and the report.

    ``feature_extractor`` replaces I3D and ``lpips_model`` replaces LPIPS-VGG. Returns the
    results dict (the content of ``results.json``) on every rank.
    """
    started = time.perf_counter()
    rank = RankInfo.current()
    device = model.device
    size = model.config.image_size
    if config.size is not None and config.size != size:
        raise ProtocolError(
            f"the protocol compares clips at the model's resolution, {size} x {size}, but --size {config.size} "
            f"was requested; pass --size {size} or --size model, or evaluate a model trained at {config.size}"
        )
    extractor = feature_extractor or load_feature_extractor(config.i3d, device)
    check_clip_length(config.frames, extractor)
    if lpips_model is None:
        from larp_video.evaluation.lpips import load_lpips

        lpips_model = load_lpips(device=device)

    entries = read_manifest_entries(config.manifest)
    selected = select_videos(len(entries), config.num_videos, config.seed)
    manifest = file_record(config.manifest)
    i3d = weights_record(extractor)
    metadata = statistics_metadata(
        {"protocol": "reconstruction", "manifest_sha256": manifest["sha256"], "num_videos": len(selected),
         "seed": config.seed, "frames": config.frames, "size": size,
         "i3d": ",".join(item["sha256"] for item in i3d["files"]) or i3d["origin"]}
    )
    cached_real = load_cached_statistics(config.real_stats, metadata)
    real = new_statistics(extractor, metadata)
    fake = new_statistics(extractor)
    usage = CodebookUsage(model.config.codebook_size)
    extremes = ExtremeClips(config.report_clips)
    records: list[dict[str, Any]] = []
    windows = math.ceil(config.frames / model.config.num_frames)

    shard_indices = shard(selected, rank.rank, rank.world_size)
    dataset = ReconstructionClips(entries, shard_indices, config.frames, size, config.seed)
    loader = make_loader(dataset, config.batch_size, config.workers)
    model.eval()
    for batch in tqdm(loader, desc="reconstruct", unit="batch", disable=not (config.progress and rank.is_main)):
        clips = batch["video"].to(device)  # (B, 3, F, S, S)
        reconstructions, indices = reconstruct_clips(model, clips, config.precision)
        usage.update(indices)

        if cached_real is None:
            real.update(extractor.features(clips, batch_size=config.batch_size))
        fake.update(extractor.features(reconstructions, batch_size=config.batch_size))

        for item, video_index in enumerate(batch["video_index"]):
            read = batch["frames_read"][item]
            original, reconstruction = clips[item : item + 1, :, :read], reconstructions[item : item + 1, :, :read]
            metrics = clip_metrics(original, reconstruction, lpips_model)
            values = {name: float(value[0]) for name, value in metrics.items()}
            entry = entries[video_index]
            records.append(
                {"video_index": video_index, "video_id": entry.video_id, "path": str(entry.path),
                 "start_frame": batch["start_frame"][item], "frames_read": read, **values}
            )
            extremes.add(values["psnr"], video_index, original[0].cpu(), reconstruction[0].cpu())

    # Combine the ranks: sums are all-reduced, records and kept clips gathered.
    if cached_real is not None:
        real = cached_real
    else:
        real.all_reduce()
    fake.all_reduce()
    usage.all_reduce()
    records = sorted(gather_lists(records), key=lambda record: record["video_index"])
    extremes = ExtremeClips(config.report_clips).merge(gather_lists(extremes.clips()))
    if cached_real is None and config.real_stats is not None and rank.is_main:
        Path(config.real_stats).parent.mkdir(parents=True, exist_ok=True)
        real.save(config.real_stats)

    rfvd, fvd_warnings = fvd_with_warnings(real, fake)
    mean = {name: sum(record[name] for record in records) / len(records) for name in CLIP_COLUMNS[5:]}
    codebook_size = model.config.codebook_size
    bits = windows * model.config.num_tokens * math.log2(codebook_size)
    results = {
        "protocol": "reconstruction",
        "description": (
            f"rFVD and reconstruction quality: one seeded {config.frames}-frame clip per video of "
            f"{Path(config.manifest).name}, {size} x {size}, deterministic (argmax) codes."
        ),
        "metrics": {
            "rfvd": rfvd,
            "psnr": mean["psnr"],
            "psnr_video_mse": mean["psnr_video_mse"],
            "ssim": mean["ssim"],
            "lpips": mean["lpips"],
            "mse": mean["mse"],
            "codebook_usage": usage.usage,
            "codebook_perplexity": usage.perplexity,
            "bits_per_pixel": bits / (config.frames * size * size),
            "clips": len(records),
        },
        "parameters": {
            "manifest": {**manifest, "videos": len(entries)},
            "split": Path(config.manifest).stem,
            "count": len(selected),
            "video_selection": _subset_rule(len(selected), len(entries), config.seed),
            "seed": config.seed,
            "resolution": size,
            "frames": config.frames,
            "clip_selection": CLIP_RULE,
            "preprocessing": f"short side resized to {size} (bilinear, antialiased), centre crop",
            "windows_per_clip": windows,
            "codes": "deterministic (argmax)",
            "model": model_record(model, model_name),
            "precision": config.precision,
            "i3d": i3d,
            "i3d_precision": "fp32",
            "fvd_definition": FVD_DEFINITION,
            "lpips": weights_record(lpips_model),
            "metric_definitions": {
                "psnr": "mean over clips of the mean per-frame PSNR (data range 1)",
                "psnr_video_mse": (
                    "mean over clips of 10 log10(1 / MSE over the clip), the reference implementation's PSNR"
                ),
                "ssim": "11 x 11 Gaussian window, sigma 1.5, mean over frames and clips",
                "lpips": "LPIPS-VGG v0.1, mean over frames and clips",
                "codebook_usage": "fraction of the codebook used at least once over all clips",
                "codebook_perplexity": "exp(entropy) of the code distribution over all clips",
                "bits_per_pixel": "windows * tokens * log2(codebook size) / (frames * height * width)",
            },
            "real_statistics": {"path": config.real_stats, "loaded_from_cache": cached_real is not None},
            "batch_size": config.batch_size,
            "world_size": rank.world_size,
        },
        "environment": environment_record(device),
        "wall_time_seconds": round(time.perf_counter() - started, 2),
        "warnings": fvd_warnings,
        "files": {"clips": "clips.csv"},
    }
    if rank.is_main:
        output_dir = Path(config.output_dir)
        _write_clip_records(output_dir / "clips.csv", records)
        if config.report_clips > 0:
            results["files"]["report"] = "report.md"
            write_report(output_dir, results, records, extremes)
        write_results(output_dir, results)
    barrier()
    return results


def _subset_rule(selected: int, available: int, seed: int) -> str:
    if selected == available:
        return "all videos of the manifest"
    return f"sorted(random.Random({seed}).sample(range({available}), {selected})) of the manifest sorted by path"


def _write_clip_records(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CLIP_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
