"""Tokenizing whole videos of any length and size, and decoding them back.

A video is cut into windows of the model's clip length; the last window is padded by
repeating its last frame. Each window becomes ``num_tokens`` tokens. Frames are fitted to the
model's square frame (see ``larp_video.data.transforms``). ``TokenizedVideo`` records what is
needed to decode back to the original frame count, frame rate and frame geometry. Windows
stream through memory, so memory use does not grow with the video's length.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from larp_video.data.transforms import FrameGeometry, fit_to_model, frames_to_tensor, model_to_source, pad_frames
from larp_video.files import atomic_write
from larp_video.models.tokenizer import LARPTokenizer
from larp_video.runtime import autocast

logger = logging.getLogger(__name__)

TOKEN_FILE_FORMAT = "larp-video-tokens"
TOKEN_FILE_VERSION = 1


class TokenFileError(ValueError):
    """A token file is missing, malformed, or does not fit the model it is decoded with."""


@dataclasses.dataclass
class TokenizedVideo:
    """Tokens of one video plus what is needed to decode it back."""

    indices: torch.Tensor  # (windows, N) int64
    num_frames: int  # frames of the original video
    fps: float
    geometry: FrameGeometry
    clip_frames: int  # frames per window (the model's clip length)
    codebook_size: int
    model: str = ""  # path or id of the tokenizer that made the tokens
    source: str = ""  # file name of the original video
    codebook: str = ""  # codebook fingerprint of that tokenizer, empty in older files

    @property
    def num_windows(self) -> int:
        return self.indices.shape[0]

    @property
    def padding_frames(self) -> int:
        """Frames repeated at the end of the last window."""
        return self.num_windows * self.clip_frames - self.num_frames

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def tokens_per_second(self) -> float:
        return self.indices.numel() / self.duration

    @property
    def bits_per_pixel(self) -> float:
        """Token bits per pixel of the model-resolution frames of the original length."""
        size = self.geometry.model_size
        return self.indices.numel() * math.log2(self.codebook_size) / (self.num_frames * size * size)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file with ``indices`` and the decoding metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": TOKEN_FILE_FORMAT,
            "version": str(TOKEN_FILE_VERSION),
            "num_frames": str(self.num_frames),
            "fps": repr(float(self.fps)),
            "clip_frames": str(self.clip_frames),
            "codebook_size": str(self.codebook_size),
            "num_tokens": str(self.indices.shape[1]),
            "geometry": json.dumps(self.geometry.to_dict()),
            "model": self.model,
            "source": self.source,
            "codebook": self.codebook,
        }
        indices = {"indices": self.indices.to(torch.int64).contiguous()}
        return atomic_write(path, lambda temporary: save_file(indices, str(temporary), metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenizedVideo":
        path = Path(path)
        if path.is_dir():
            raise TokenFileError(f"token file {path} is a directory; pass the .safetensors file written by `larp tokenize`")
        if not path.is_file():
            raise TokenFileError(f"token file {path} not found")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                names = set(handle.keys())
                indices = handle.get_tensor("indices") if "indices" in names else None
        except Exception as error:  # safetensors raises several types for malformed files
            raise TokenFileError(
                f"cannot read token file {path}: it is not a safetensors file ({error}); "
                "pass a file written by `larp tokenize`"
            ) from error
        if metadata.get("format") != TOKEN_FILE_FORMAT or indices is None:
            raise TokenFileError(
                f"{path} is a safetensors file but not a larp-video token file (written by `larp tokenize`)"
            )
        return cls(
            indices=indices,
            num_frames=int(metadata["num_frames"]),
            fps=float(metadata["fps"]),
            geometry=FrameGeometry(**json.loads(metadata["geometry"])),
            clip_frames=int(metadata["clip_frames"]),
            codebook_size=int(metadata["codebook_size"]),
            model=metadata.get("model", ""),
            source=metadata.get("source", ""),
            codebook=metadata.get("codebook", ""),
        )


def iter_windows(
    chunks: Iterable[np.ndarray], geometry: FrameGeometry, clip_frames: int
) -> Iterator[tuple[torch.Tensor, int]]:
    """Turn uint8 frame chunks of ``clip_frames`` frames into model clips.

    Yields (clip (3, T, S, S) float, real_frames): a shorter final chunk is padded by
    repeating its last frame, and ``real_frames`` counts the frames before the padding.
    """
    for chunk in chunks:
        real = chunk.shape[0]
        clip = fit_to_model(frames_to_tensor(chunk), geometry)
        yield pad_frames(clip, clip_frames), real


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_video(
    video: str | os.PathLike | np.ndarray | torch.Tensor,
    model: LARPTokenizer,
    *,
    fps: float | None = None,
    fit: str = "crop",
    batch_size: int = 4,
    precision: str = "fp32",
    progress: bool = False,
    model_name: str = "",
) -> TokenizedVideo:
    """Tokenize a video file or a uint8 (T, H, W, 3) frame array with deterministic codes.

    ``fps`` is required for arrays and ignored for files (read from the file). The model
    stays on its device; frames are moved there window by window.
    """
    config = model.config
    if isinstance(video, (str, os.PathLike)):
        from larp_video.data.video_io import iter_video, probe_video

        info = probe_video(video)
        num_frames, fps, height, width = info.num_frames, info.fps, info.height, info.width
        chunks = iter_video(video, config.num_frames)
        source = Path(video).name
    else:
        frames = np.asarray(video)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"video frames must be a non-empty uint8 (T, H, W, 3) array, got {frames.dtype} {frames.shape}")
        if fps is None or fps <= 0:
            raise ValueError(f"fps must be a positive number for frame arrays, got {fps}")
        num_frames, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
        chunks = (frames[start : start + config.num_frames] for start in range(0, num_frames, config.num_frames))
        source = ""

    geometry = FrameGeometry.compute(height, width, config.image_size, fit)
    num_windows = math.ceil(num_frames / config.num_frames)
    rows = []
    was_training = model.training
    model.eval()
    bar = tqdm(total=num_windows, desc="tokenize", unit="window", disable=not progress)
    try:
        with torch.inference_mode(), autocast(model.device, precision):
            for batch in batched(iter_windows(chunks, geometry, config.num_frames), batch_size):
                clips = torch.stack([clip for clip, _ in batch]).to(model.device)
                rows.append(model.encode(clips).indices.cpu())
                bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)

    return TokenizedVideo(
        indices=torch.cat(rows),
        num_frames=num_frames,
        fps=float(fps),
        geometry=geometry,
        clip_frames=config.num_frames,
        codebook_size=config.codebook_size,
        model=model_name,
        source=source,
        codebook=codebook_fingerprint(model),
    )


def codebook_fingerprint(model: LARPTokenizer) -> str:
    """Return 16 hex digits of the SHA-256 of the codebook rounded to bfloat16.

    The rounding makes the fingerprint the same whether the model runs with float32 or bfloat16
    weights, so tokens made in one precision match the model in the other.
    """
    codebook = model.quantizer.codebook.weight.detach().to("cpu", torch.bfloat16).contiguous()
    return hashlib.sha256(codebook.view(torch.int16).numpy().tobytes()).hexdigest()[:16]


def check_tokens_fit_model(tokens: TokenizedVideo, model: LARPTokenizer) -> None:
    """Raise ``TokenFileError`` unless the model can decode ``tokens``."""
    config = model.config
    mismatches = []
    if tokens.indices.shape[1] != config.num_tokens:
        mismatches.append(f"{tokens.indices.shape[1]} tokens per window vs the model's {config.num_tokens}")
    if tokens.codebook_size != config.codebook_size:
        mismatches.append(f"codebook size {tokens.codebook_size} vs {config.codebook_size}")
    if tokens.clip_frames != config.num_frames:
        mismatches.append(f"{tokens.clip_frames} frames per window vs {config.num_frames}")
    if tokens.geometry.model_size != config.image_size:
        mismatches.append(f"frame size {tokens.geometry.model_size} vs {config.image_size}")
    if mismatches:
        made_by = f" (made by {tokens.model})" if tokens.model else ""
        raise TokenFileError(
            f"these tokens{made_by} do not fit this model: {'; '.join(mismatches)}; decode with the tokenizer that made them"
        )
    if tokens.codebook and tokens.codebook != codebook_fingerprint(model):
        made_by = f" ({tokens.model})" if tokens.model else ""
        logger.warning(
            "these tokens were made by a tokenizer%s with another codebook than this model's, so the decoded "
            "video will not match the original; decode with the tokenizer that made them",
            made_by,
        )


def decode_windows(
    tokens: TokenizedVideo,
    model: LARPTokenizer,
    *,
    batch_size: int = 4,
    precision: str = "fp32",
    progress: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield decoded windows as float (3, t, S, S) model-frame clips in [0, 1].

    The padding frames of the last window are dropped, so the yielded frames add up to
    ``tokens.num_frames``.
    """
    check_tokens_fit_model(tokens, model)
    remaining = tokens.num_frames
    was_training = model.training
    model.eval()
    bar = tqdm(total=tokens.num_windows, desc="decode", unit="window", disable=not progress)
    try:
        with torch.no_grad():
            for start in range(0, tokens.num_windows, batch_size):
                indices = tokens.indices[start : start + batch_size].to(model.device)
                with autocast(model.device, precision):
                    videos = model.decode(indices)
                for video in videos.float().clamp_(0.0, 1.0).cpu():
                    keep = min(remaining, tokens.clip_frames)
                    remaining -= keep
                    yield video[:, :keep]
                bar.update(indices.shape[0])
    finally:
        bar.close()
        model.train(was_training)


def decode_video(
    tokens: TokenizedVideo,
    model: LARPTokenizer,
    *,
    scale: str = "source",
    batch_size: int = 4,
    precision: str = "fp32",
    progress: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield decoded frames as float (3, t, H, W) chunks in the original geometry.

    ``scale="source"`` resizes to the source frame (pad fit) or the source's centre square
    (crop fit); ``scale="model"`` keeps the model's resolution without the padding.
    """
    for window in decode_windows(tokens, model, batch_size=batch_size, precision=precision, progress=progress):
        yield model_to_source(window, tokens.geometry, scale).clamp_(0.0, 1.0)
