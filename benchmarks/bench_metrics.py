"""Throughput of the metric networks: I3D clips/s and LPIPS-VGG frames/s.

Usage: PYTHONPATH=src python benchmarks/bench_metrics.py [--device cpu] [--repeats 3]

Inputs are random. Each measurement is the best of ``--repeats`` timed runs after one warm-up
run, because the first call with a new input shape is several times slower on CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from larp_video.evaluation.i3d import load_i3d
from larp_video.evaluation.lpips import load_lpips


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device to run on")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the best is reported")
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    i3d = load_i3d("carrier", device=device)
    clips = torch.randint(0, 256, (4, 16, 224, 224, 3), dtype=torch.uint8, generator=generator)
    seconds = best_seconds(lambda: i3d.features(clips, batch_size=4), args.repeats)
    print(f"I3D features, 4 clips of 16 x 224 x 224, fp32: {clips.shape[0] / seconds:.2f} clips/s")

    lpips = load_lpips("carrier", device=device)
    real = torch.rand(32, 3, 64, 64, generator=generator).to(device)
    fake = torch.rand(32, 3, 64, 64, generator=generator).to(device)
    for autocast in (False, True):
        label = "bf16 autocast" if autocast else "fp32"

        def forward() -> torch.Tensor:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                return lpips(real, fake, normalize=True)

        def forward_backward() -> None:
            leaf = fake.clone().requires_grad_(True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = lpips(real, leaf, normalize=True).mean()
            loss.backward()

        seconds = best_seconds(forward, args.repeats)
        print(f"LPIPS forward, 32 frame pairs of 64 x 64, {label}: {real.shape[0] / seconds:.1f} frames/s")
        seconds = best_seconds(forward_backward, args.repeats)
        print(f"LPIPS forward + backward, 32 frame pairs of 64 x 64, {label}: {real.shape[0] / seconds:.1f} frames/s")


if __name__ == "__main__":
    main()
