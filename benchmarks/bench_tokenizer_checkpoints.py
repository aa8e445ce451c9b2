"""PSNR of every checkpoint of a tokenizer run, on fixed clips of its training and validation videos.

Validation during training uses few clips and shows only unseen videos. This script scores
the trained and the EMA weights of each periodic checkpoint on the same fixed clips of both
video lists: ``--clips-per-video`` per video, seeded starts, deterministic codes. The table
shows whether reconstruction improves on the training videos, on unseen ones, or both.

Usage:
    python benchmarks/bench_tokenizer_checkpoints.py runs/tokenizer-tiny \\
        --train data/real-clips/train.csv --val data/real-clips/val.csv [--clips-per-video 8]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from larp_video.data.datasets import VideoClipDataset, parse_skipped
from larp_video.data.manifests import list_videos
from larp_video.training.checkpoints import tokenizer_from_lightning_checkpoint
from larp_video.training.tokenizer_metrics import clip_psnr


def checkpoint_step(path: Path) -> int:
    match = re.search(r"step=(\d+)", path.name)
    return int(match.group(1)) if match else -1


def fixed_clips(source: str, num_frames: int, image_size: int, clips_per_video: int) -> torch.Tensor:
    """Return (clips, 3, T, S, S) in [0, 1]: ``clips_per_video`` fixed clips of each listed video.

    Exits with a message when a listed video cannot be read, since the dataset would score
    another video in its place.
    """
    try:
        videos = list_videos(source)
        dataset = VideoClipDataset(videos, num_frames, image_size, random_clips=False, repeats=clips_per_video, seed=123)
        items = [dataset[item] for item in range(len(dataset))]
    except (OSError, ValueError, RuntimeError) as error:
        raise SystemExit(f"cannot load the clips of {source}: {error}") from error
    skipped = sorted(set(parse_skipped([item["skipped"] for item in items])))
    if skipped:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in skipped)
        raise SystemExit(f"unreadable videos in {source}; fix or remove them from the list:\n{lines}")
    return torch.stack([item["video"] for item in items])


@torch.inference_mode()
def mean_psnr(tokenizer, clips: torch.Tensor, batch_size: int = 16) -> float:
    scores = []
    for start in range(0, clips.shape[0], batch_size):
        video = clips[start : start + batch_size]
        reconstruction = tokenizer.decode_codes(tokenizer.encode(video).codes).float().clamp(0, 1)
        scores.append(clip_psnr(reconstruction, video))
    return torch.cat(scores).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with checkpoints/*step=N.ckpt")
    parser.add_argument("--train", required=True, help="training videos: folder, list or manifest")
    parser.add_argument("--val", required=True, help="validation videos: folder, list or manifest")
    parser.add_argument("--clips-per-video", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.clips_per_video < 1:
        parser.error(f"--clips-per-video must be at least 1, got {args.clips_per_video}")
    if not args.run.is_dir():
        parser.error(f"run folder {args.run} not found")
    torch.set_num_threads(args.threads)

    checkpoints = sorted((args.run / "checkpoints").glob("*step=*.ckpt"), key=checkpoint_step)
    checkpoints = [path for path in checkpoints if path.is_file()]
    if not checkpoints:
        raise SystemExit(
            f"no checkpoint files named '*step=N.ckpt' in {args.run / 'checkpoints'} (sharded checkpoint folders "
            "are not read)"
        )

    clips = None
    print("| step | train videos, trained | train videos, EMA | val videos, trained | val videos, EMA |")
    print("|---|---|---|---|---|")
    for path in checkpoints:
        has_ema = "ema_state_dict" in torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        models = [tokenizer_from_lightning_checkpoint(path, use_ema=False).eval()]
        if has_ema:
            models.append(tokenizer_from_lightning_checkpoint(path, use_ema=True).eval())
        if clips is None:
            config = models[0].config
            clips = {
                name: fixed_clips(source, config.num_frames, config.image_size, args.clips_per_video)
                for name, source in (("train", args.train), ("val", args.val))
            }
        cells = []
        for name in ("train", "val"):
            scores = [f"{mean_psnr(model, clips[name]):.2f} dB" for model in models]
            cells += scores if has_ema else scores + ["no EMA"]
        print(f"| {checkpoint_step(path)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
