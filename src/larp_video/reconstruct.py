"""Reconstructing a video file through the tokenizer, with quality and rate measurements.

Windows stream from the file through the model into the output writers, so memory use is
bounded by a batch of windows, whatever the video's length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from larp_video.data.transforms import (
    FrameGeometry,
    fit_to_model,
    frames_to_tensor,
    model_to_source,
    pad_frames,
    source_region,
    tensor_to_frames,
)
from larp_video.models.tokenizer import LARPTokenizer
from larp_video.runtime import autocast
from larp_video.video_tokens import batched
from larp_video.visualize import save_frame_grid

GRID_FRAMES = 8


@dataclasses.dataclass
class ReconstructionResult:
    """Measurements of one reconstruction. PSNR and SSIM are computed at the model's resolution
    on the frames of the original video (padding frames and padded borders excluded)."""

    input: str
    output: str | None
    side_by_side: str | None
    grid: str | None
    model: str
    num_frames: int
    fps: float
    duration_seconds: float
    source_size: tuple[int, int]  # (height, width)
    model_size: int
    fit: str
    windows: int
    tokens_per_window: int
    tokens_per_second: float
    bits_per_pixel: float  # token bits / (frames x model-resolution pixels)
    psnr: float  # dB, mean over frames
    ssim: float  # mean over frames
    precision: str
    device: str
    wall_time_seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


class FrameQuality:
    """Running per-frame PSNR and SSIM sums over float (3, T, H, W) clips in [0, 1]."""

    def __init__(self) -> None:
        self.frames = 0
        self.psnr_sum = 0.0
        self.ssim_sum = 0.0

    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        from larp_video.evaluation.metrics import psnr_per_video, ssim_per_video

        frames = target.shape[1]
        self.psnr_sum += float(psnr_per_video(target[None], prediction[None])[0]) * frames
        self.ssim_sum += float(ssim_per_video(target[None], prediction[None])[0]) * frames
        self.frames += frames

    @property
    def psnr(self) -> float:
        return self.psnr_sum / max(self.frames, 1)

    @property
    def ssim(self) -> float:
        return self.ssim_sum / max(self.frames, 1)


class WindowSink:
    """Receives (source chunk, model clip, reconstruction) windows in order and feeds the
    quality sums, the output writers and the frame grid."""

    def __init__(self, geometry: FrameGeometry, writer, side_writer, grid_indices: set[int]):
        self.geometry = geometry
        self.writer = writer
        self.side_writer = side_writer
        self.grid_indices = grid_indices
        self.grid_pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.quality = FrameQuality()
        self.frame_index = 0

    def add(self, chunk: np.ndarray, clip: torch.Tensor, reconstruction: torch.Tensor) -> None:
        real = chunk.shape[0]  # frames before the padding of a short last window
        target = model_to_source(clip[:, :real], self.geometry, "model")
        prediction = model_to_source(reconstruction[:, :real], self.geometry, "model")
        self.quality.update(target, prediction)

        if self.writer is not None:
            frames = tensor_to_frames(model_to_source(reconstruction[:, :real], self.geometry, "source"))
            self.writer.write(frames)
            if self.side_writer is not None:
                original = source_region(torch.from_numpy(chunk).permute(3, 0, 1, 2), self.geometry)
                self.side_writer.write(np.concatenate([original.permute(1, 2, 3, 0).numpy(), frames], axis=2))

        for offset in range(real):
            if self.frame_index + offset in self.grid_indices:
                pick = slice(offset, offset + 1)
                self.grid_pairs.append((tensor_to_frames(target[:, pick])[0], tensor_to_frames(prediction[:, pick])[0]))
        self.frame_index += real


def reconstruct_video(
    path: str | os.PathLike,
    model: LARPTokenizer,
    output: str | os.PathLike | None,
    *,
    fit: str = "crop",
    side_by_side: bool = False,
    batch_size: int = 4,
    precision: str = "fp32",
    progress: bool = True,
    model_name: str = "",
) -> ReconstructionResult:
    """Tokenize and decode ``path`` window by window and write the reconstruction to ``output``.

    With ``side_by_side``, also writes ``<output stem>-side-by-side.mp4`` (the part of the
    source that the model sees | reconstruction) and ``<output stem>-grid.png``. With
    ``output=None`` nothing is written and only the measurements are returned.
    """
    from larp_video.data.video_io import VideoWriter, iter_video, probe_video

    started = time.perf_counter()
    config = model.config
    info = probe_video(path)
    geometry = FrameGeometry.compute(info.height, info.width, config.image_size, fit)
    if output is None and side_by_side:
        raise ValueError("side_by_side needs an output path for the extra files")
    side_path = grid_path = None
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        if side_by_side:
            side_path = output.with_name(f"{output.stem}-side-by-side.mp4")
            grid_path = output.with_name(f"{output.stem}-grid.png")
    grid_frames = np.linspace(0, info.num_frames - 1, min(GRID_FRAMES, info.num_frames)).round().astype(int)
    num_windows = math.ceil(info.num_frames / config.num_frames)

    model.eval()
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(output, info.fps)) if output is not None else None
        side_writer = stack.enter_context(VideoWriter(side_path, info.fps)) if side_path else None
        sink = WindowSink(geometry, writer, side_writer, set(grid_frames.tolist()))
        bar = stack.enter_context(tqdm(total=num_windows, desc="reconstruct", unit="window", disable=not progress))
        for batch in batched(iter_video(path, config.num_frames), batch_size):
            clips = torch.stack(
                [pad_frames(fit_to_model(frames_to_tensor(chunk), geometry), config.num_frames) for chunk in batch]
            )  # (b, 3, T, S, S)
            with torch.no_grad(), autocast(model.device, precision):
                decoded = model.decode_codes(model.encode(clips.to(model.device)).codes)
            decoded = decoded.float().clamp_(0.0, 1.0).cpu()
            for chunk, clip, reconstruction in zip(batch, clips, decoded):
                sink.add(chunk, clip, reconstruction)
            bar.update(len(batch))

    if grid_path is not None:
        rows = [[original for original, _ in sink.grid_pairs], [decoded for _, decoded in sink.grid_pairs]]
        save_frame_grid(grid_path, rows, ["original", "reconstruction"])

    total_tokens = num_windows * config.num_tokens
    duration = info.num_frames / info.fps
    return ReconstructionResult(
        input=str(path),
        output=str(output) if output is not None else None,
        side_by_side=str(side_path) if side_path else None,
        grid=str(grid_path) if grid_path else None,
        model=model_name,
        num_frames=info.num_frames,
        fps=info.fps,
        duration_seconds=duration,
        source_size=(info.height, info.width),
        model_size=config.image_size,
        fit=fit,
        windows=num_windows,
        tokens_per_window=config.num_tokens,
        tokens_per_second=total_tokens / duration,
        bits_per_pixel=total_tokens * math.log2(config.codebook_size) / (info.num_frames * config.image_size**2),
        psnr=sink.quality.psnr,
        ssim=sink.quality.ssim,
        precision=precision,
        device=str(model.device),
        wall_time_seconds=time.perf_counter() - started,
    )
