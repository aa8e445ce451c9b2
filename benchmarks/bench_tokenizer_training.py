"""Tokenizer training speed: step time of a config and the data loader's clips per second.

Usage (from the repository root, after `make clips`):
    PYTHONPATH=src python benchmarks/bench_tokenizer_training.py [--config configs/tokenizer/tiny.yaml]
        [--steps 10] [--markdown docs/benchmarks.md]

Three measurements:
1. Training step time on a synthetic batch of random clips with the config's shape and batch
   size. It is measured in fp32 and bf16 autocast, once with the reconstruction losses only
   (L1 + VQ + prior) and once with the full recipe (+ LPIPS + GAN, discriminator every
   ``discriminator_every`` steps). The time is the mean over ``--steps`` steps after 2 warm-up
   steps. The step count is rounded down to a multiple of the discriminator interval, so the
   discriminator's share is counted once per interval.
2. Clips per second of the config's data loader alone (its workers, its real videos), after the
   workers have probed every video once, against the clips per second a bf16 full-recipe step
   consumes (batch size / step time).
3. The share of a real training run's wall time spent waiting for the next batch, with the
   loader and training sharing the machine as they do in practice.

``--markdown FILE`` replaces (or appends) the "## Tokenizer training" section of FILE with the
results, the machine and the command. Other processes on the machine slow every number down:
the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from larp_video.data.datamodule import VideoDataModule
from larp_video.training.tokenizer_module import TokenizerTrainingModule

SECTION = "## Tokenizer training"


class SyntheticClips(Dataset):
    def __init__(self, num_frames: int, image_size: int, length: int):
        self.shape = (3, num_frames, image_size, image_size)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(index)
        return {"video": torch.rand(self.shape, generator=generator), "skipped": ""}


class StepTimer(L.Callback):
    """Records each training step's duration and the time spent waiting for each batch."""

    def __init__(self):
        self.step_seconds: list[float] = []
        self.wait_seconds: list[float] = []
        self._batch_start = None
        self._batch_end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_end is not None:
            self.wait_seconds.append(now - self._batch_end)
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batch_end = time.perf_counter()
        self.step_seconds.append(self._batch_end - self._batch_start)


def model_options(config: dict, full_recipe: bool) -> dict:
    options = dict(config["model"])
    options.update(preview_every_n_steps=0, discriminator_start_step=None, gan_start_step=0, lpips_start_step=0)
    if not full_recipe:
        options.update(lpips_weight=0.0, gan_weight=0.0)
    return options


def fit(module: TokenizerTrainingModule, loader: DataLoader, steps: int, precision: str, timer: StepTimer) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)


def step_seconds(config: dict, precision: str, full_recipe: bool, steps: int) -> float:
    tokenizer = config["model"]["tokenizer"]
    batch_size = config["data"]["batch_size"]
    interval = config["model"].get("discriminator_every", 5) if full_recipe else 1
    timed = max(interval, steps // interval * interval)
    warmup = 2
    dataset = SyntheticClips(tokenizer["num_frames"], tokenizer["image_size"], batch_size * (warmup + timed))
    timer = StepTimer()
    module = TokenizerTrainingModule(**model_options(config, full_recipe))
    fit(module, DataLoader(dataset, batch_size=batch_size), warmup + timed, precision, timer)
    return sum(timer.step_seconds[warmup:]) / timed


def data_module(config: dict) -> VideoDataModule:
    tokenizer = config["model"]["tokenizer"]
    options = dict(config["data"], num_frames=tokenizer["num_frames"], image_size=tokenizer["image_size"])
    data = VideoDataModule(**options)
    data.setup("fit")
    return data


def loader_clips_per_second(config: dict, batches: int) -> tuple[float, int]:
    """Return (clips/s after warm-up, workers) of the config's training loader."""
    data = data_module(config)
    loader = data.train_dataloader()
    iterator = iter(loader)
    # Warm-up: every worker probes the videos it meets once and keeps the results.
    for _ in range(max(2, 2 * len(data.train_dataset.videos) // data.hparams.batch_size)):
        next(iterator)
    start = time.perf_counter()
    clips = 0
    for _ in range(batches):
        clips += next(iterator)["video"].shape[0]
    return clips / (time.perf_counter() - start), data.hparams.num_workers


def data_wait_share(config: dict, steps: int, precision: str) -> tuple[float, float]:
    """Return (share of wall time spent waiting for batches, mean step seconds) of a real run."""
    timer = StepTimer()
    module = TokenizerTrainingModule(**model_options(config, full_recipe=True))
    data = data_module(config)
    fit(module, data.train_dataloader(), steps, precision, timer)
    skip = 3
    waiting, stepping = sum(timer.wait_seconds[skip:]), sum(timer.step_seconds[skip:])
    return waiting / (waiting + stepping), stepping / max(1, len(timer.step_seconds) - skip)


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} torch thread{'s' if threads != 1 else ''}"


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def write_section(path: Path, text: str) -> None:
    """Replace the section that starts with SECTION in ``path`` by ``text``, or append it."""
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    start = content.find(SECTION)
    if start < 0:
        content = content.rstrip() + "\n\n" + text
    else:
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + text + (content[end + 1 :] if end >= 0 else "")
    path.write_text(content.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tokenizer/tiny.yaml", help="training config to measure")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    parser.add_argument("--batches", type=int, default=20, help="timed data loader batches")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's num_threads)")
    parser.add_argument("--markdown", type=Path, help="write the results into this file's tokenizer section")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    config = yaml.safe_load(Path(args.config).read_text())
    threads = args.threads or config.get("num_threads")
    if threads:
        torch.set_num_threads(threads)
    load_before = load_average()
    print(f"{machine()}; load average {load_before}")

    rows = []
    for precision, label in (("32-true", "fp32"), ("bf16-mixed", "bf16 autocast")):
        for full_recipe in (False, True):
            seconds = step_seconds(config, precision, full_recipe, args.steps)
            losses = "L1 + VQ + prior + LPIPS + GAN" if full_recipe else "L1 + VQ + prior"
            rows.append((label, losses, seconds))
            print(f"step, {label}, {losses}: {seconds:.2f} s")
    batch_size = config["data"]["batch_size"]
    consumed = batch_size / rows[-1][2]

    delivered, workers = loader_clips_per_second(config, args.batches)
    print(f"data loader alone: {delivered:.1f} clips/s with {workers} workers; bf16 full steps consume {consumed:.1f} clips/s")
    wait_share, real_step = data_wait_share(config, args.steps + 5, "bf16-mixed")
    print(f"real training run: {100 * wait_share:.1f}% of the time waiting for data, {real_step:.2f} s per step")
    load_after = load_average()
    print(f"load average after: {load_after}")

    if args.markdown:
        command = "PYTHONPATH=src python benchmarks/bench_tokenizer_training.py " + " ".join(sys.argv[1:])
        lines = [
            SECTION,
            "",
            f"`{command.strip()}` on {machine()}. Load average (1, 5, 15 min) {load_before} before and "
            f"{load_after} after; load from other jobs slows every number down.",
            "",
            f"Training step of `{args.config}` (batch {batch_size}), synthetic clips, mean of {args.steps} steps:",
            "",
            "| precision | losses | s per step | clips/s |",
            "|---|---|---|---|",
        ]
        lines += [f"| {label} | {losses} | {seconds:.2f} | {batch_size / seconds:.1f} |" for label, losses, seconds in rows]
        lines += [
            "",
            f"Data loader of the config alone, real videos ({workers} workers, after each worker probed every video): "
            f"{delivered:.1f} clips/s, {delivered / consumed:.1f} times the {consumed:.1f} clips/s that a bf16 "
            f"full-recipe step consumes. In a real bf16 run of {args.steps + 5} steps, training waited for data "
            f"{100 * wait_share:.1f}% of the time ({real_step:.2f} s per step).",
            "",
        ]
        write_section(args.markdown, "\n".join(lines))


if __name__ == "__main__":
    main()
