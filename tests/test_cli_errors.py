"""The `larp` command line on bad input: one-line errors that name the value, and no traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURES, REPO_ROOT
from generation_helpers import save_tiny_generator
from larp_video.cli.main import main
from video_factory import make_test_video

TOKENIZER = str(FIXTURES / "reference" / "tokenizer-tiny")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths of a small video, its token file, a tiny generator and some files that are not what they claim."""
    folder = tmp_path_factory.mktemp("inputs")
    video = make_test_video(folder / "clip.mp4", num_frames=10, width=40, height=30)
    tokens = folder / "clip.safetensors"
    assert main(["tokenize", str(video), "-o", str(tokens), "--model", TOKENIZER]) == 0
    (folder / "text.safetensors").write_text("not a safetensors file\n")
    (folder / "random.ckpt").write_bytes(bytes(100))
    (folder / "folder").mkdir()
    (folder / "header-less.csv").write_text("clip.mp4,walk,0\n")
    (folder / "empty.csv").write_text("id,path,action,label\n")
    (folder / "bad-label.csv").write_text("id,path,action,label\n0,clip.mp4,walk,zero\n")
    (folder / "missing-videos.csv").write_text("id,path,action,label\n0,gone.mp4,walk,0\n")
    save_tiny_generator(folder / "generator")
    return {"dir": folder, "video": str(video), "tokens": str(tokens)}


def run_larp(capsys, argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def test_output_suffix_rejected_before_model_loads(files, capsys):
    cases = [
        ["tokenize", files["video"], "-o", str(files["dir"] / "tokens.mp4")],
        ["decode", files["tokens"], "-o", str(files["dir"] / "video.avi")],
        ["reconstruct", files["video"], "-o", str(files["dir"] / "video.txt")],
    ]
    for argv in cases:
        # A missing --model would fail later, so a clean suffix error proves the early check.
        status, error = run_larp(capsys, argv + ["--model", str(files["dir"] / "no-model")])
        assert status == 2, argv
        assert "must end in" in error, error
        assert "Traceback" not in error


def test_output_directory_rejected(files, capsys):
    for command, source in (("tokenize", files["video"]), ("decode", files["tokens"]), ("reconstruct", files["video"])):
        status, error = run_larp(capsys, [command, source, "-o", str(files["dir"] / "folder"), "--model", TOKENIZER])
        assert status == 2, command
        assert "is a directory" in error, error
    assert not list((files["dir"]).glob(".folder*")), "a temporary file was left behind"


def test_output_under_a_file_rejected(files, capsys):
    status, error = run_larp(capsys, ["decode", files["tokens"], "-o", files["video"] + "/out.mp4", "--model", TOKENIZER])
    assert status == 2
    assert "is a file, not a folder" in error


def test_decode_creates_missing_folder(files, capsys):
    output = files["dir"] / "new" / "deeper" / "video.mp4"
    assert main(["decode", files["tokens"], "-o", str(output), "--model", TOKENIZER]) == 0
    assert output.is_file()


def test_decode_token_file_errors(files, capsys):
    cases = {
        str(files["dir"] / "text.safetensors"): "not a safetensors file",
        str(files["dir"] / "folder"): "is a directory",
        str(files["dir"] / "generator" / "model.safetensors"): "not a larp-video token file",
    }
    for path, expected in cases.items():
        status, error = run_larp(capsys, ["decode", path, "-o", str(files["dir"] / "out.mp4"), "--model", TOKENIZER])
        assert status == 2, path
        assert expected in error, error
    assert not (files["dir"] / "out.mp4").exists()


def test_random_ckpt_is_a_clean_error(files, capsys):
    checkpoint = str(files["dir"] / "random.ckpt")
    for argv in (["info", checkpoint], ["export-generator", checkpoint, "-o", str(files["dir"] / "export")]):
        status, error = run_larp(capsys, argv)
        assert status == 2, argv
        assert "cannot read checkpoint" in error, error
        assert "Traceback" not in error


def test_info_on_generator_names_model_type(files, capsys):
    status, error = run_larp(capsys, ["info", str(files["dir"] / "generator")])
    assert status == 2
    assert "'LARPGenerator', not a LARPTokenizer" in error


def test_convert_output_checks(files, capsys):
    # A copy, so that a regression overwrites a temporary folder and not the fixture.
    source = files["dir"] / "tokenizer-copy"
    shutil.copytree(TOKENIZER, source)
    status, error = run_larp(capsys, ["convert", str(source), "-o", str(source) + "/"])
    assert status == 2
    assert "is the source directory" in error
    status, error = run_larp(capsys, ["convert", str(source), "-o", files["video"]])
    assert status == 2
    assert "is a file" in error


@pytest.mark.parametrize("device, expected", [("gpu", "invalid device 'gpu'"), ("mps", "device 'mps'")])
def test_bad_device_is_a_clean_error(files, capsys, device, expected):
    argv = ["tokenize", files["video"], "-o", str(files["dir"] / "t.safetensors"), "--model", TOKENIZER, "--device", device]
    status, error = run_larp(capsys, argv)
    assert status == 2
    assert expected in error


@pytest.mark.parametrize(
    "manifest, expected",
    [
        ("header-less.csv", "first line must be the header id,path,action,label"),
        ("empty.csv", "lists no videos"),
        ("bad-label.csv", "label 'zero' is not an integer"),
        ("absent.csv", "not found"),
    ],
)
def test_manifest_errors(files, capsys, manifest, expected):
    argv = ["tokenize-dataset", str(files["dir"] / manifest), "-o", str(files["dir"] / "shards"), "--model", TOKENIZER]
    status, error = run_larp(capsys, argv)
    assert status == 2
    assert expected in error, error


def test_tokenize_dataset_without_clips_fails(files, capsys):
    output = files["dir"] / "no-clips"
    argv = ["tokenize-dataset", str(files["dir"] / "missing-videos.csv"), "-o", str(output), "--model", TOKENIZER]
    status, error = run_larp(capsys, argv)
    assert status == 1
    assert "no clip was written" in error


def test_sample_bad_sampling_values(files, capsys):
    base = ["sample", "--generator", str(files["dir"] / "generator"), "--tokenizer", TOKENIZER, "--device", "cpu"]
    for option, value, expected in (("--top-p", "2", "top_p"), ("--temperature", "-1", "temperature")):
        output = files["dir"] / f"samples{option}"
        status, error = run_larp(capsys, base + [option, value, "-o", str(output)])
        assert status == 2, option
        assert expected in error, error
        assert not output.exists(), "samples.json was written before the check"


def test_sample_plan_without_columns(files, capsys):
    argv = ["sample", "--generator", str(files["dir"] / "generator"), "--tokenizer", TOKENIZER, "--device", "cpu"]
    status, error = run_larp(capsys, argv + ["--plan", str(files["dir"] / "header-less.csv"), "-o", str(files["dir"] / "s")])
    assert status == 2
    assert "lacks the columns" in error


def test_usage_error_under_python_m(files):
    # ``python -m`` runs main.py as __main__, a second copy of the module; UsageError must still be caught.
    argv = ["tokenize", files["video"], "-o", str(files["dir"] / "t.safetensors"), "--model", TOKENIZER, "--batch-size", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "larp_video.cli.main", *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT / "src"), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "larp: error: --batch-size must be at least 1, got 0"


def test_failed_write_is_one_line(files, capsys, monkeypatch):
    # Stands in for a read-only folder, which root (as in CI) could still write to.
    def raise_permission_error(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(files["dir"] / "out.safetensors"))

    monkeypatch.setattr("larp_video.video_tokens.save_file", raise_permission_error)
    status, error = run_larp(capsys, ["tokenize", files["video"], "-o", str(files["dir"] / "out.safetensors"), "--model", TOKENIZER])
    assert status == 2
    assert "larp: error: [Errno 13] Permission denied" in error
    assert "Traceback" not in error
    assert not list(files["dir"].glob(".out.safetensors*")), "a temporary file was left behind"

