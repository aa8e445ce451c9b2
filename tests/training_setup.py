"""Tiny training configs and helpers shared by the training tests."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import yaml

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

TINY_DISCRIMINATOR = {"dim": 16, "depth": 1, "num_heads": 2}

TINY_MODEL = {
    "tokenizer": TINY_TOKENIZER,
    "warmup_steps": 1,
    "lpips_frames": 1,
    "discriminator": TINY_DISCRIMINATOR,
    "discriminator_every": 2,
    "ema_decay": 0.99,
    "preview_every_n_steps": 2,
    "preview_clips": 2,
}


def merge(base: dict, overrides: dict) -> dict:
    """Return ``base`` with ``overrides`` merged in, recursively for dicts."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(
    tmp_path: Path,
    train,
    *,
    max_steps: int = 4,
    model: dict | None = None,
    data: dict | None = None,
    trainer: dict | None = None,
    checkpoint_every: int = 2,
    name: str = "run",
) -> tuple[Path, Path]:
    """Write a LightningCLI YAML for a tiny CPU run and return (config path, run folder)."""
    run = tmp_path / name
    config = {
        "seed_everything": 0,
        # One thread: tiny models gain nothing from two, and two threads stall badly when other
        # processes load the CPU.
        "num_threads": 1,
        "model": merge(TINY_MODEL, model or {}),
        "data": merge(
            {"train": str(train), "val": str(train), "batch_size": 2, "num_workers": 0, "persistent_workers": False},
            data or {},
        ),
        "trainer": merge(
            {
                "max_steps": max_steps,
                "accelerator": "cpu",
                "devices": 1,
                "precision": "bf16-mixed",
                "log_every_n_steps": 1,
                "val_check_interval": 2,
                "check_val_every_n_epoch": None,
                "num_sanity_val_steps": 0,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "default_root_dir": str(run),
                "logger": [
                    {
                        "class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(run), "name": "csv"},
                    }
                ],
                "callbacks": [
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {
                            "dirpath": str(run / "checkpoints"),
                            "every_n_train_steps": checkpoint_every,
                            "save_last": True,
                            "save_top_k": -1,
                        },
                    }
                ],
            },
            trainer or {},
        ),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, run


def read_metrics(run: Path) -> list[dict[str, str]]:
    """Return the rows of every CSV log of a run, oldest version first."""
    rows = []
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(path, newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    """Return (tokenizer step, value) of the rows where ``name`` was logged."""
    values = []
    for row in rows:
        if row.get(name) not in (None, ""):
            values.append((int(float(row["train/tokenizer_step"])), float(row[name])))
    return values


def all_finite(values) -> bool:
    return all(math.isfinite(value) for value in values)


def make_video_folder(folder: Path, count: int = 3) -> Path:
    """Write ``count`` short test videos of different lengths (40 x 36, 10 fps) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        make_test_video(folder / f"v{index}.mp4", num_frames=12 + 5 * index, width=40, height=36, fps=10.0)
    return folder
