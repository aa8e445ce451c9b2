"""Helpers for the generator tests: a tiny tokenizer with varied codes, tiny generators, workers."""

from __future__ import annotations

from pathlib import Path

import torch

from larp_video.models.generator import GeneratorConfig, LARPGenerator
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from video_factory import make_test_video

CLASS_NAMES = ["class0", "class1", "class2"]


def save_varied_tokenizer(folder: Path) -> Path:
    """Save a tiny tokenizer (8 x 32 x 32 clips, 16 tokens, codebook 64) whose codes vary with the video.

    With the default initialisation every token of a random tiny tokenizer takes one or two
    codes. Wider queries, code projection and patch embedding spread them over the codebook, so tests
    that compare codes can fail.
    """
    torch.manual_seed(0)
    model = LARPTokenizer(TokenizerConfig.preset("tiny"))
    with torch.no_grad():
        torch.nn.init.normal_(model.queries, std=0.3)
        torch.nn.init.normal_(model.to_code.weight, std=1.0)
        torch.nn.init.normal_(model.patch_embed.proj.weight, std=0.5)
        torch.nn.init.normal_(model.head.linear.weight, std=0.02)
    return model.save_pretrained(folder)


def save_tiny_generator(folder: Path, mode: str = "class_conditional", num_classes: int = 3) -> Path:
    """Save a tiny generator for the tiny tokenizer (vocabulary 64, 16 tokens) with a random head,
    and a classes.txt naming its classes."""
    torch.manual_seed(1)
    config = GeneratorConfig.tiny(mode=mode, num_classes=num_classes, dim=32, num_layers=1, num_heads=2)
    model = LARPGenerator(config)
    torch.nn.init.normal_(model.head.weight, std=0.3)
    model.save_pretrained(folder)
    (folder / "classes.txt").write_text("\n".join(CLASS_NAMES[:num_classes]) + "\n")
    return folder


def write_pattern_manifest(folder: Path, frame_counts: list[int]) -> Path:
    """Encode one moving-pattern video per frame count and list them in an id,path,action,label manifest.

    Each video has another size, so it gives another picture after fitting. Labels cycle 0, 1, 2.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id,path,action,label"]
    for index, count in enumerate(frame_counts):
        name = f"video{index:02d}.mp4"
        make_test_video(folder / name, num_frames=count, width=40 + 12 * index, height=36, fps=12.0)
        lines.append(f"{index},{name},{CLASS_NAMES[index % 3]},{index % 3}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def cli_worker(rank: int, world_size: int, init_file: str, argv: list[str]) -> None:
    """Run the ``larp`` command ``argv`` as one rank of a gloo process group."""
    from larp_video.cli.main import main

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"larp {argv[0]} exited with status {status} on rank {rank}")
    finally:
        torch.distributed.destroy_process_group()
