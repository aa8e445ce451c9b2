"""`larp train tokenizer` end to end on generated videos, a few steps on the CPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml

from larp_video.cli.main import main
from larp_video.pretrained import load_tokenizer
from larp_video.training.schedules import warmup_cosine
from conftest import REPO_ROOT
from training_setup import all_finite, column, make_video_folder, read_metrics, write_config


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    return make_video_folder(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, video_folder):
    """A 6-step run whose GAN starts at tokenizer step 3, with a discriminator update every step."""
    tmp_path = tmp_path_factory.mktemp("gan-run")
    config, run = write_config(
        tmp_path,
        video_folder,
        max_steps=6,
        model={"gan_start_step": 3, "discriminator_every": 1},
    )
    assert main(["train", "tokenizer", "--config", str(config)]) == 0
    return run


def test_train_tokenizer_runs_and_checkpoints(gan_run):
    assert (gan_run / "checkpoints" / "last.ckpt").is_file()

    rows = read_metrics(gan_run)
    losses = [value for _, value in column(rows, "train/loss")]
    assert len(losses) == 6
    assert all_finite(losses)
    assert any(row.get("val/psnr") for row in rows)
    assert any(row.get("val_ema/psnr") for row in rows)

    model, _ = load_tokenizer(gan_run / "checkpoints" / "last.ckpt")
    assert model.config.num_tokens == 8


def test_gan_starts_at_tokenizer_step(gan_run):
    rows = read_metrics(gan_run)
    assert [step for step, _ in column(rows, "train/gan_loss")] == [3, 4, 5]
    assert [step for step, _ in column(rows, "train/disc_loss")] == [3, 4, 5]


def test_max_steps_counts_tokenizer_steps(gan_run):
    checkpoint = torch.load(gan_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["tokenizer_step"] == 6
    assert checkpoint["global_step"] == 6


def test_training_logs_each_loss(gan_run):
    rows = read_metrics(gan_run)
    for name in ("l1", "lpips", "vq_loss", "prior_loss", "prior_top5", "codebook_perplexity", "lr_discriminator"):
        values = [value for _, value in column(rows, f"train/{name}")]
        assert values, name
        assert all_finite(values), name


def test_training_writes_previews(gan_run):
    previews = sorted(path.name for path in gan_run.glob("csv/version_0/previews/*.png"))
    assert "train-step00000000.png" in previews
    assert any(name.startswith("val-") for name in previews)


def test_checkpoint_exports_ema_or_trained_weights(gan_run, tmp_path):
    checkpoint = gan_run / "checkpoints" / "last.ckpt"
    assert main(["convert", str(checkpoint), "-o", str(tmp_path / "ema"), "--drop-prior"]) == 0
    assert main(["convert", str(checkpoint), "-o", str(tmp_path / "raw"), "--no-ema"]) == 0

    ema, _ = load_tokenizer(tmp_path / "ema")
    raw, _ = load_tokenizer(tmp_path / "raw")
    assert ema.prior is None
    assert raw.prior is not None
    assert not torch.equal(ema.queries, raw.queries)


def test_resume_continues_step_count(tmp_path, video_folder):
    config, run = write_config(tmp_path, video_folder, max_steps=4)
    assert main(["train", "tokenizer", "--config", str(config)]) == 0
    assert main(["train", "tokenizer", "--config", str(config), "--trainer.max_steps=6", "--resume", "last"]) == 0

    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["tokenizer_step"] == 6
    assert checkpoint["ema_updates"] == 6
    steps = [step for step, _ in column(read_metrics(run), "train/loss")]
    assert steps == [0, 1, 2, 3, 4, 5]


def test_corrupt_video_is_skipped(tmp_path, video_folder, caplog):
    folder = tmp_path / "videos"
    folder.mkdir()
    for path in video_folder.glob("*.mp4"):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.mp4").write_bytes(b"this is not a video" * 100)
    config, run = write_config(tmp_path, folder, max_steps=4, model={"gan_weight": 0, "lpips_weight": 0})

    with caplog.at_level(logging.WARNING):
        assert main(["train", "tokenizer", "--config", str(config)]) == 0

    per_file = [record for record in caplog.records if "skipped unreadable video" in record.getMessage()]
    assert len(per_file) == 1
    assert "broken.mp4" in per_file[0].getMessage()
    summaries = [record for record in caplog.records if "files could not be read" in record.getMessage()]
    assert summaries
    skipped = [float(row["data/skipped_clips"]) for row in read_metrics(run) if row.get("data/skipped_clips")]
    assert skipped and max(skipped) >= 1


def test_train_rejects_unknown_model_key(tmp_path, video_folder, capsys):
    config, _ = write_config(tmp_path, video_folder)
    with pytest.raises(SystemExit):
        main(["train", "tokenizer", "--config", str(config), "--model.tokenizer.num_token=4"])
    assert "num_token" in capsys.readouterr().err


def test_train_invalid_trainer_value_is_one_line(tmp_path, video_folder, capsys):
    config, _ = write_config(tmp_path, video_folder)
    assert main(["train", "tokenizer", "--config", str(config), "--trainer.strategy=fsdp"]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("larp: error: invalid training configuration: ")
    assert "requires a GPU" in last_line


def test_train_unknown_kind_prints_usage(capsys):
    assert main(["train", "diffusion"]) == 2
    assert "usage: larp train" in capsys.readouterr().err


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.01), (5, 0.505), (10, 1.0), (55, 0.505), (100, 0.01), (150, 0.01)],
)
def test_warmup_cosine_schedule(step, expected):
    assert warmup_cosine(step, total_steps=100, warmup_steps=10) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("name", ["tiny", "S", "B", "L", "L-long"])
def test_shipped_config_parses(name, capsys):
    config = REPO_ROOT / "configs" / "tokenizer" / f"{name}.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "tokenizer", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["tokenizer"]["num_frames"] == 16
    assert printed["data"]["train"]


def test_fp16_loss_scaling_with_two_optimizers(tmp_path, video_folder):
    # Lightning turns 16-mixed into bf16 on CPUs, so the fp16 plugin is passed explicitly.
    plugin = {
        "class_path": "lightning.pytorch.plugins.precision.MixedPrecision",
        "init_args": {"precision": "16-mixed", "device": "cpu"},
    }
    config, run = write_config(
        tmp_path,
        video_folder,
        max_steps=4,
        model={"lpips_weight": 0, "discriminator_every": 1},
        trainer={"precision": None, "plugins": [plugin]},
    )
    assert main(["train", "tokenizer", "--config", str(config)]) == 0

    rows = read_metrics(run)
    norms = [value for _, value in column(rows, "train/grad_norm")]
    assert len(norms) == 4
    assert all(norm < 1e3 for norm in norms), "clipping saw gradients that were still scaled"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "scale" in checkpoint["MixedPrecision"]
    assert checkpoint["global_step"] == 4


@pytest.mark.parametrize("flag, shown", [("-q", False), ("-v", True)])
def test_logging_flags_before_train(tmp_path, video_folder, flag, shown):
    config, _ = write_config(tmp_path, video_folder, max_steps=1, data={"val": None})
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "larp_video.cli.main", flag, "train", "tokenizer", "--config", str(config)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("training on 3 videos" in result.stderr) == shown


def test_unwritable_checkpoint_folder_fails_before_training(tmp_path, video_folder, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config, _ = write_config(
        tmp_path, video_folder, max_steps=1, data={"val": None},
        trainer={"callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                "init_args": {"dirpath": str(blocker / "checkpoints")}}]},
    )
    assert main(["train", "tokenizer", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"cannot write checkpoints to {blocker / 'checkpoints'}" in error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    "option, hint",
    [("--trainer.gradient_clip_val=1.0", "set model.gradient_clip_norm instead"),
     ("--trainer.accumulate_grad_batches=2", "raise data.batch_size or the number of processes")],
)
def test_lightning_automatic_options_rejected_in_one_line(tmp_path, video_folder, capsys, option, hint):
    config, _ = write_config(tmp_path, video_folder, max_steps=1, data={"val": None})
    assert main(["train", "tokenizer", "--config", str(config), option]) == 2
    error = capsys.readouterr().err
    assert hint in error
    assert "Traceback" not in error
