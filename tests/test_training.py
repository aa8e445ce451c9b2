"""`larp train tokenizer` end to end on generated videos, a few steps on the CPU."""

from __future__ import annotations

import csv
import math

import pytest
import yaml

from larp_video.cli.main import main
from larp_video.pretrained import load_tokenizer
from larp_video.training.schedules import warmup_cosine
from video_factory import make_test_video

TINY_TOKENIZER = {
    "num_frames": 8,
    "image_size": 32,
    "encoder_width": 32,
    "encoder_depth": 1,
    "encoder_heads": 2,
    "decoder_width": 32,
    "decoder_depth": 1,
    "decoder_heads": 2,
    "num_tokens": 8,
    "codebook_size": 32,
    "prior": {"depth": 1, "heads": 2, "width": 16, "max_positions": 8},
}


def write_config(tmp_path, videos, max_steps=4):
    run = tmp_path / "run"
    config = {
        "seed_everything": 0,
        "model": {"tokenizer": TINY_TOKENIZER, "warmup_steps": 1},
        "data": {"train": str(videos), "val": str(videos), "batch_size": 2, "num_workers": 0},
        "trainer": {
            "max_steps": max_steps,
            "accelerator": "cpu",
            "precision": "bf16-mixed",
            "log_every_n_steps": 1,
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "enable_progress_bar": False,
            "default_root_dir": str(run),
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run), "name": "csv"}}],
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(run / "checkpoints"), "every_n_train_steps": 2, "save_last": True},
                }
            ],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, run


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    for index in range(3):
        make_test_video(folder / f"v{index}.mp4", num_frames=12 + 5 * index, width=40, height=36, fps=10.0)
    return folder


def read_metrics(run):
    rows = list(csv.DictReader(open(next(run.glob("csv/*/metrics.csv")))))
    return rows


def test_train_tokenizer_runs_and_checkpoints(tmp_path, video_folder):
    config, run = write_config(tmp_path, video_folder)
    assert main(["train", "tokenizer", "--config", str(config)]) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()

    losses = [float(row["train/loss"]) for row in read_metrics(run) if row.get("train/loss")]
    assert len(losses) == 4
    assert all(math.isfinite(loss) for loss in losses)
    assert any(row.get("val/psnr") for row in read_metrics(run))

    model, _ = load_tokenizer(run / "checkpoints" / "last.ckpt")
    assert model.config.num_tokens == 8


def test_train_rejects_unknown_model_key(tmp_path, video_folder, capsys):
    config, _ = write_config(tmp_path, video_folder)
    with pytest.raises(SystemExit):
        main(["train", "tokenizer", "--config", str(config), "--model.tokenizer.num_token=4"])
    assert "num_token" in capsys.readouterr().err


def test_train_unknown_kind_prints_usage(capsys):
    assert main(["train", "diffusion"]) == 2
    assert "usage: larp train" in capsys.readouterr().err


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.01), (5, 0.505), (10, 1.0), (55, 0.505), (100, 0.01), (150, 0.01)],
)
def test_warmup_cosine_schedule(step, expected):
    assert warmup_cosine(step, total_steps=100, warmup_steps=10) == pytest.approx(expected, abs=1e-3)
