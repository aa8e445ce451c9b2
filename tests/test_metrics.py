"""Per-video PSNR, SSIM and LPIPS, codebook statistics and bits per pixel."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from larp_video.evaluation.lpips import load_lpips
from larp_video.evaluation.metrics import (
    CodebookUsage,
    bits_per_pixel,
    lpips_per_video,
    psnr_per_video,
    ssim_per_video,
)


def _videos(count: int = 2, frames: int = 3, size: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.2 + 0.6 * torch.rand(count, 3, frames, size, size, generator=generator)  # values in [0.2, 0.8]


def test_psnr_known_offset():
    real = _videos()

    psnr = psnr_per_video(real, real + 0.1)  # MSE 0.01 in every frame

    torch.testing.assert_close(psnr, torch.full((2,), 20.0), atol=1e-4, rtol=0)


def test_psnr_identical_is_infinite():
    real = _videos()

    assert torch.isinf(psnr_per_video(real, real.clone())).all()


def test_psnr_frame_average_differs_from_video_mse():
    real = _videos(count=1, frames=2)
    fake = real.clone()
    fake[:, :, 0] += 0.1  # frame 0: MSE 1e-2, 20 dB
    fake[:, :, 1] += 0.01  # frame 1: MSE 1e-4, 40 dB

    per_frame = psnr_per_video(real, fake)
    per_video_mse = psnr_per_video(real, fake, per_frame=False)

    assert per_frame.item() == pytest.approx(30.0, abs=1e-3)
    assert per_video_mse.item() == pytest.approx(10 * math.log10(1 / ((1e-2 + 1e-4) / 2)), abs=1e-3)


def test_ssim_identical_is_one():
    real = _videos()

    torch.testing.assert_close(ssim_per_video(real, real.clone()), torch.ones(2))


def test_ssim_is_frame_mean():
    real = _videos(count=1, frames=3)
    generator = torch.Generator().manual_seed(1)
    fake = (real + 0.05 * torch.randn(real.shape, generator=generator)).clamp(0, 1)

    per_video = ssim_per_video(real, fake)
    per_frame = [
        structural_similarity_index_measure(fake[:, :, t], real[:, :, t], data_range=1.0, kernel_size=11, sigma=1.5)
        for t in range(3)
    ]

    torch.testing.assert_close(per_video, torch.stack(per_frame).mean().view(1))
    assert per_video.item() < 1.0


def test_rejects_signed_range():
    real = _videos()

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr_per_video(real * 2 - 1, real)


def test_rejects_integer_video():
    real = _videos()

    with pytest.raises(TypeError, match="floating point"):
        ssim_per_video(real, (real * 255).to(torch.uint8))


def test_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        psnr_per_video(_videos(frames=3), _videos(frames=2))


def test_lpips_per_video(tmp_path):
    model = load_lpips("carrier", cache_dir=tmp_path)
    real = _videos(size=32)
    fake = real.flip(-1)

    values = lpips_per_video(model, real, fake, batch_size=4)

    assert values.shape == (2,)
    assert (values > 0).all()
    assert lpips_per_video(model, real, real.clone()).abs().max().item() == 0.0


def test_codebook_uniform_use():
    usage = CodebookUsage(8).update(torch.arange(8).repeat(5))

    assert usage.usage == 1.0
    assert usage.perplexity == pytest.approx(8.0)


def test_codebook_single_entry():
    usage = CodebookUsage(16).update(torch.full((4, 32), 3))

    assert usage.usage == 1 / 16
    assert usage.perplexity == pytest.approx(1.0)


def test_codebook_merge_equals_combined():
    first, second = torch.tensor([[0, 1, 1]]), torch.tensor([2, 2, 2, 7])

    merged = CodebookUsage(8).update(first).merge(CodebookUsage(8).update(second))
    combined = CodebookUsage(8).update(first).update(second)

    assert torch.equal(merged.counts, combined.counts)
    assert merged.usage == 4 / 8
    assert merged.total == 7


def test_codebook_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        CodebookUsage(8).update(torch.tensor([0, 8]))


def test_codebook_rejects_float_indices():
    with pytest.raises(TypeError, match="integer"):
        CodebookUsage(8).update(torch.tensor([0.0, 1.0]))


def test_codebook_empty_perplexity_raises():
    with pytest.raises(ValueError, match="at least one"):
        CodebookUsage(8).perplexity


def test_bits_per_pixel_larp_l():
    # 1024 tokens of a 8192-entry codebook (13 bits each) for 16 frames of 128 x 128.
    assert bits_per_pixel(1024, 8192, 16, 128, 128) == pytest.approx(1024 * 13 / (16 * 128 * 128))


def test_bits_per_pixel_rejects_zero_frames():
    with pytest.raises(ValueError, match="frames=0"):
        bits_per_pixel(1024, 8192, 0, 128, 128)
