"""The `larp` command line on small generated videos."""

from __future__ import annotations

import json

import pytest
import torch

from larp_video.cli.main import main
from larp_video.data.video_io import probe_video
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.video_tokens import TokenizedVideo
from video_factory import make_test_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = LARPTokenizer(TokenizerConfig.preset("tiny"))
    torch.nn.init.normal_(model.head.linear.weight, std=0.02)
    return model.save_pretrained(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=19, width=64, height=48, fps=12.0)


def test_tokenize_then_decode(tmp_path, model_dir, video):
    tokens_path = tmp_path / "tokens.safetensors"
    assert main(["tokenize", str(video), "-o", str(tokens_path), "--model", str(model_dir), "--device", "cpu"]) == 0
    tokens = TokenizedVideo.load(tokens_path)
    assert tokens.indices.shape == (3, 16)

    output = tmp_path / "decoded.mp4"
    assert main(["decode", str(tokens_path), "-o", str(output), "--model", str(model_dir), "--device", "cpu"]) == 0
    info = probe_video(output)
    assert info.num_frames == 19
    assert info.fps == pytest.approx(12.0)
    assert (info.height, info.width) == (48, 48)


def test_decode_pad_fit_restores_frame_size(tmp_path, model_dir, video):
    tokens_path = tmp_path / "tokens.safetensors"
    main(["tokenize", str(video), "-o", str(tokens_path), "--model", str(model_dir), "--fit", "pad"])
    output = tmp_path / "decoded.mp4"
    main(["decode", str(tokens_path), "-o", str(output), "--model", str(model_dir)])
    info = probe_video(output)
    assert (info.height, info.width) == (48, 64)


def test_reconstruct_side_by_side_outputs(tmp_path, model_dir, video, capsys):
    output = tmp_path / "out.mp4"
    assert main(["reconstruct", str(video), "-o", str(output), "--model", str(model_dir), "--side-by-side"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed
    assert "bits per pixel" in printed
    assert probe_video(output).num_frames == 19
    side = probe_video(tmp_path / "out-side-by-side.mp4")
    assert (side.height, side.width) == (48, 96)
    assert (tmp_path / "out-grid.png").stat().st_size > 0

    metrics = json.loads((tmp_path / "out-metrics.json").read_text())
    assert metrics["num_frames"] == 19
    assert metrics["windows"] == 3
    assert metrics["psnr"] > 0
    assert metrics["tokens_per_second"] == pytest.approx(3 * 16 / (19 / 12.0))


def test_info_prints_tokens(model_dir, capsys):
    assert main(["info", str(model_dir)]) == 0
    assert "tokens per clip      16" in capsys.readouterr().out


def test_convert_released_checkpoint(tmp_path, reference_dir, capsys):
    output = tmp_path / "converted"
    assert main(["convert", str(reference_dir / "tokenizer-tiny"), "-o", str(output), "--drop-prior"]) == 0
    converted = LARPTokenizer.from_pretrained(output)
    assert converted.prior is None
    config = json.loads((output / "config.json").read_text())
    assert config["larp_video_format"] == 1


def test_missing_video_is_a_clean_error(tmp_path, model_dir, capsys):
    status = main(["reconstruct", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4"), "--model", str(model_dir)])
    assert status == 2
    error = capsys.readouterr().err
    assert "nope.mp4" in error
    assert "Traceback" not in error


def test_missing_model_is_a_clean_error(tmp_path, video, capsys):
    status = main(["tokenize", str(video), "-o", str(tmp_path / "t.safetensors"), "--model", str(tmp_path)])
    assert status == 2
    assert "config.json" in capsys.readouterr().err


def test_decode_rejects_non_token_file(tmp_path, model_dir, video, capsys):
    status = main(["decode", str(video), "-o", str(tmp_path / "o.mp4"), "--model", str(model_dir)])
    assert status == 2
    assert "token file" in capsys.readouterr().err
