"""Per-video reconstruction metrics and token statistics.

Conventions (videos are float (B, 3, T, H, W) in [0, 1]):
- PSNR and SSIM are computed per frame with torchmetrics' functional API (data_range 1.0; SSIM
  with an 11 x 11 Gaussian window of sigma 1.5, K1 0.01, K2 0.03) and averaged over the frames of
  each video. ``psnr_per_video(..., per_frame=False)`` instead takes PSNR of each video's MSE over
  all its frames, the convention of the reference implementation's evaluation script. PSNR of two
  identical frames is infinite.
- LPIPS is the mean per-frame LPIPS-VGG of each video (see ``lpips.video_lpips``).
- Codebook usage is the fraction of codebook entries used at least once over a whole evaluated
  set, and perplexity is exp(entropy) of the entries' empirical distribution over that set.
- Bits per pixel: tokens * log2(codebook_size) / (frames * height * width).

Dimension legend: B videos, C channels, T frames, H height, W width, K codebook size.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from larp_video.evaluation.lpips import LPIPS, video_lpips

DATA_RANGE = 1.0
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5


def _check_video_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape != fake.shape or real.ndim != 5 or real.shape[1] != 3:
        raise ValueError(
            f"expected two (B, 3, T, H, W) videos of the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    for name, video in (("real", real), ("fake", fake)):
        if not video.is_floating_point():
            raise TypeError(f"the {name} video must be floating point in [0, 1], got dtype {video.dtype}")
        low, high = torch.aminmax(video.detach())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"the {name} video must be in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}]; "
                "clamp decoder outputs with .clamp(0, 1)"
            )


def _frames(video: torch.Tensor) -> torch.Tensor:
    return video.transpose(1, 2).flatten(0, 1)  # (B, 3, T, H, W) -> (B*T, 3, H, W)


def psnr_per_video(real: torch.Tensor, fake: torch.Tensor, per_frame: bool = True) -> torch.Tensor:
    """Return the (B,) PSNR in dB of each video, averaged over frames unless ``per_frame=False``."""
    _check_video_pair(real, fake)
    real, fake = real.float(), fake.float()
    videos, _, frames = real.shape[:3]
    if not per_frame:
        mse = (real - fake).pow(2).mean(dim=(1, 2, 3, 4))  # (B,)
        return 10.0 * torch.log10(DATA_RANGE**2 / mse)

    values = peak_signal_noise_ratio(
        _frames(fake), _frames(real), data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3)
    )  # (B*T,)
    return values.view(videos, frames).mean(dim=1)


def ssim_per_video(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Return the (B,) SSIM of each video, averaged over frames."""
    _check_video_pair(real, fake)
    videos, _, frames = real.shape[:3]
    values = structural_similarity_index_measure(
        _frames(fake.float()),
        _frames(real.float()),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        data_range=DATA_RANGE,
        reduction="none",
    )  # (B*T,)
    return values.view(videos, frames).mean(dim=1)


def lpips_per_video(model: LPIPS, real: torch.Tensor, fake: torch.Tensor, batch_size: int | None = 32) -> torch.Tensor:
    """Return the (B,) mean per-frame LPIPS-VGG of each video, scoring ``batch_size`` frames at a time."""
    _check_video_pair(real, fake)
    with torch.inference_mode():
        return video_lpips(model, real, fake, batch_size=batch_size)


def bits_per_pixel(num_tokens: int, codebook_size: int, frames: int, height: int, width: int) -> float:
    """Return tokens * log2(codebook_size) / (frames * height * width)."""
    if min(num_tokens, frames, height, width) < 1 or codebook_size < 2:
        raise ValueError(
            "bits_per_pixel needs positive counts and a codebook of at least 2 entries, got "
            f"num_tokens={num_tokens}, codebook_size={codebook_size}, frames={frames}, height={height}, width={width}"
        )
    return num_tokens * math.log2(codebook_size) / (frames * height * width)


class CodebookUsage:
    """Counts of codebook indices over an evaluated set, for usage and perplexity."""

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.int64)  # (K,)

    def update(self, indices: torch.Tensor) -> CodebookUsage:
        """Count an integer tensor of indices of any shape; returns self."""
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"codebook indices must be an integer tensor, got dtype {indices.dtype}")
        flat = indices.detach().reshape(-1).to("cpu", torch.int64)
        if flat.numel() == 0:
            return self
        low, high = int(flat.min()), int(flat.max())
        if low < 0 or high >= self.codebook_size:
            raise ValueError(f"codebook indices must be in [0, {self.codebook_size}), got values in [{low}, {high}]")
        self.counts += torch.bincount(flat, minlength=self.codebook_size)
        return self

    def merge(self, other: CodebookUsage) -> CodebookUsage:
        """Return new counts equal to the sum of both."""
        if other.codebook_size != self.codebook_size:
            raise ValueError(f"cannot merge codebook sizes {self.codebook_size} and {other.codebook_size}")
        merged = CodebookUsage(self.codebook_size)
        merged.counts = self.counts + other.counts
        return merged

    def all_reduce(self) -> CodebookUsage:
        """Sum the counts of all torch.distributed ranks in place; does nothing without a process group."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self
        device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else "cpu"
        counts = self.counts.to(device)
        torch.distributed.all_reduce(counts)
        self.counts = counts.cpu()
        return self

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def usage(self) -> float:
        """Fraction of the entries used at least once."""
        return int((self.counts > 0).sum()) / self.codebook_size

    @property
    def perplexity(self) -> float:
        """exp(entropy) of the index distribution: K for uniform use of all K entries, 1 for a single entry."""
        if self.total == 0:
            raise ValueError("perplexity needs at least one counted index")
        probabilities = self.counts[self.counts > 0].double() / self.total
        return float(torch.exp(-(probabilities * probabilities.log()).sum()))
