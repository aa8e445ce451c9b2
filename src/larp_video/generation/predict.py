"""Frame prediction from a video file: continue its first frames with a frame-prediction generator."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from larp_video.config import ConfigError
from larp_video.data.transforms import FrameGeometry, fit_to_model, frames_to_tensor, tensor_to_frames
from larp_video.data.video_errors import TooFewFramesError
from larp_video.data.video_io import probe_video, read_video, write_video
from larp_video.generation.loading import LoadedGenerator
from larp_video.generation.requests import sample_seed
from larp_video.generation.sample_files import SamplingSettings, condition_from_frames, generate_videos
from larp_video.models.tokenizer import LARPTokenizer
from larp_video.visualize import save_frame_grid


@dataclasses.dataclass
class PredictionResult:
    """Files and facts of one ``predict_video`` run."""

    input: str
    output: str
    side_by_side: str | None  # real continuation | prediction, when the video has a whole clip from start
    grid: str | None
    record: str
    start_frame: int
    conditioning_frames: int
    clip_frames: int
    fps: float
    seed: int
    # PSNR in dB of the predicted frames after the given ones against the real frames (fitted
    # to the model's frame); None without a real continuation.
    psnr_predicted_frames: float | None
    wall_time_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def predict_video(
    path: str | os.PathLike,
    loaded: LoadedGenerator,
    tokenizer: LARPTokenizer,
    output: str | os.PathLike,
    settings: SamplingSettings,
    *,
    start_frame: int = 0,
    fps: float | None = None,
    side_by_side: bool = True,
) -> PredictionResult:
    """Give frames [start, start + c) of ``path`` to the generator and write the predicted clip.

    The output is a whole clip of the tokenizer's length T at its frame size: the generator
    regenerates the c given frames too (they are not copied in). When the video has T frames
    from ``start_frame``, ``OUT-side-by-side.mp4`` (real | predicted) and ``OUT-grid.png`` are
    written as well. ``OUT-prediction.json`` records the settings. ``fps`` defaults to the input's.
    """
    started = time.perf_counter()
    if not loaded.model.config.frame_prediction:
        raise ConfigError(
            f"generator {loaded.name} is class-conditional; frame prediction needs a generator trained in "
            "frame_prediction mode (sample class-conditional generators with `larp sample`)"
        )
    clip_frames = tokenizer.config.num_frames
    given = settings.conditioning_frames
    if given >= clip_frames:
        raise ConfigError(f"--frames must be smaller than the tokenizer's clip length {clip_frames}, got {given}")

    info = probe_video(path)
    if start_frame + given > info.num_frames:
        raise TooFewFramesError(
            os.fspath(path),
            f"{given} frames from frame {start_frame} were requested but the video has {info.num_frames} frames; "
            "pass a smaller --start-frame",
        )
    available = min(clip_frames, info.num_frames - start_frame)
    frames, _ = read_video(path, start_frame, available, info=info)  # (t, H, W, 3)
    fps = fps or info.fps

    device = next(loaded.model.parameters()).device
    condition = condition_from_frames(tokenizer, [frames[:given]], settings).to(device)  # (1, N)
    seed = sample_seed(settings.seed, 0)
    _, videos = generate_videos(loaded.model, tokenizer, condition, [seed], settings, progress=True)
    predicted = tensor_to_frames(videos[0].cpu())  # (T, S, S, 3)

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_video(output, predicted, fps)
    side_path = grid_path = None
    psnr = None
    if available == clip_frames:
        real = _fit_real_frames(frames, tokenizer.config.image_size, settings.fit)  # (T, S, S, 3)
        psnr = _psnr(real[given:], predicted[given:])
        if side_by_side:
            side_path = write_video(output.with_name(f"{output.stem}-side-by-side.mp4"), np.concatenate([real, predicted], axis=2), fps)
            grid_path = save_frame_grid(
                output.with_name(f"{output.stem}-grid.png"),
                [list(real), list(predicted)],
                ["real", f"predicted ({given} given)"],
            )

    record_path = output.with_name(f"{output.stem}-prediction.json")
    result = PredictionResult(
        input=str(path),
        output=str(output),
        side_by_side=str(side_path) if side_path else None,
        grid=str(grid_path) if grid_path else None,
        record=str(record_path),
        start_frame=start_frame,
        conditioning_frames=given,
        clip_frames=clip_frames,
        fps=float(fps),
        seed=settings.seed,
        psnr_predicted_frames=psnr,
        wall_time_seconds=round(time.perf_counter() - started, 2),
    )
    document = {"generator": loaded.name, **result.to_dict(), "settings": settings.to_dict()}
    record_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return result


def _fit_real_frames(frames: np.ndarray, size: int, fit: str) -> np.ndarray:
    video = frames_to_tensor(frames)  # (3, T, H, W)
    geometry = FrameGeometry.compute(video.shape[2], video.shape[3], size, fit)
    return tensor_to_frames(fit_to_model(video, geometry))


def _psnr(real: np.ndarray, predicted: np.ndarray) -> float:
    error = torch.from_numpy(real).float().div(255) - torch.from_numpy(predicted).float().div(255)
    mse = float(error.square().mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))
