"""The streaming reconstruction pipeline."""

from __future__ import annotations

import pytest
import torch

from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.reconstruct import reconstruct_video
from video_factory import make_test_video


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = LARPTokenizer(TokenizerConfig.preset("tiny", prior=None))
    torch.nn.init.normal_(model.head.linear.weight, std=0.02)
    return model.eval()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("v") / "v.mp4", num_frames=21, width=48, height=40, fps=10.0)


def test_measure_only_matches_written_run(tmp_path, model, video):
    written = reconstruct_video(video, model, tmp_path / "o.mp4", progress=False)
    measured = reconstruct_video(video, model, None, progress=False)
    assert measured.output is None
    assert measured.psnr == pytest.approx(written.psnr)
    assert measured.ssim == pytest.approx(written.ssim)


def test_measure_only_rejects_side_by_side(model, video):
    with pytest.raises(ValueError, match="output path"):
        reconstruct_video(video, model, None, side_by_side=True, progress=False)


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_rate_fields(tmp_path, model, video, fit):
    result = reconstruct_video(video, model, None, fit=fit, progress=False)
    assert result.windows == 3
    assert result.bits_per_pixel == pytest.approx(3 * 16 * 6 / (21 * 32 * 32))
    assert result.duration_seconds == pytest.approx(2.1)
