"""Helpers for the evaluation tests: small manifests of generated videos and a cheap feature network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from video_factory import make_test_video

STUB_FEATURES = 12


class StubExtractor(nn.Module):
    """A stand-in for I3D with I3D's ``features`` interface and minimum clip length.

    Features are a fixed random projection of each clip's per-frame channel means and standard
    deviations, so they depend on the content and are reproducible. It takes (B, 3, T, H, W) in [0, 1].
    """

    feature_dim = STUB_FEATURES
    min_frames = 9

    def __init__(self) -> None:
        super().__init__()
        self.weights_source = "stub"
        self.weights_origin = "test projection"
        self.weights_files = ()
        self.calls = 0

    def features(self, videos: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        self.calls += 1
        videos = videos.float().cpu()
        frames = videos.shape[2]
        summary = torch.cat([videos.mean(dim=(3, 4)), videos.std(dim=(3, 4))], dim=1).flatten(1)  # (B, 6 * T)
        projection = torch.randn(6 * frames, STUB_FEATURES, generator=torch.Generator().manual_seed(frames))
        # One clip at a time, so a clip's features do not depend on the batch it is in.
        return torch.cat([row[None] @ projection for row in summary])


class StubLPIPS(nn.Module):
    """A stand-in for LPIPS-VGG (which costs about 0.1 s per 32 x 32 frame here): mean absolute difference."""

    weights_source = "stub"
    weights_origin = "mean absolute difference"
    weights_files = ()

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3))


def write_manifest(folder: Path, frame_counts: list[int], name: str = "manifest.csv", size: int = 40) -> Path:
    """Encode one test video per frame count (a different pattern each) and list them in a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, count in enumerate(frame_counts):
        path = folder / f"video{index:02d}.mp4"
        if not path.exists():
            # Noise over a brightness level that differs per video, drifting from frame to frame.
            rng = np.random.default_rng(index)
            base = rng.integers(0, 96, size=(1, size, size + 8, 3)) + 30 * index
            drift = (np.arange(count) * (index + 1) % 40).reshape(-1, 1, 1, 1)
            frames = np.clip(base + drift, 0, 255).astype(np.uint8)
            make_test_video(path, frames=frames, fps=12.0)
        rows.append({"id": index, "path": path.name, "action": f"class{index % 3}", "label": index % 3})
    manifest = folder / name
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "action", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def write_samples(folder: Path, count: int, frames: int = 10, size: int = 32, seed: int = 0) -> Path:
    """Write ``count`` generated-looking videos of ``frames`` frames."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        noise = rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8)
        make_test_video(folder / f"{index}.mp4", frames=noise)
    return folder


def distributed_worker(rank: int, world_size: int, init_file: str, arguments: dict) -> None:
    """Run both protocols as one rank of a gloo group; rank 0 writes the results JSON it got."""
    from larp_video.evaluation.protocols import ChunkProtocolConfig, run_chunk_protocol
    from larp_video.evaluation.reconstruction_protocol import ReconstructionConfig, run_reconstruction
    from larp_video.pretrained import load_tokenizer

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        generation = run_chunk_protocol(
            ChunkProtocolConfig.for_generation(**arguments["generation"]), feature_extractor=StubExtractor()
        )
        model, name = load_tokenizer(arguments["model"])
        reconstruction = run_reconstruction(
            ReconstructionConfig(**arguments["reconstruction"]), model, name,
            feature_extractor=StubExtractor(), lpips_model=StubLPIPS(),
        )
        if rank == 0:
            summary = {"generation": generation["metrics"], "reconstruction": reconstruction["metrics"]}
            Path(arguments["summary"]).write_text(json.dumps(summary))
    finally:
        torch.distributed.destroy_process_group()
