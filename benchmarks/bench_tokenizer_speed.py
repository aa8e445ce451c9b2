"""Encode + decode time of one 16 x 128 x 128 clip with the LARP-L tokenizer.

Random weights (the output head N(0, 0.02) so that outputs are not constant); the timing does
not depend on the weights. Modes:

* fp32: float32 weights and activations.
* bf16-autocast: float32 weights under torch.autocast(bfloat16), as the reference does.
* bf16: weights cast to bfloat16 once (``precision="bf16"`` of ``prepare_for_inference``);
  the quantizer still runs in float32.
* bf16-compile, fp32-compile: the bf16 or fp32 mode with encode and decode compiled by
  ``torch.compile`` (inductor); the compile time is reported apart and not counted in the
  per-clip time.

Usage: python benchmarks/bench_tokenizer_speed.py [--modes fp32 bf16 bf16-compile] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import torch

from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig


def build_model(mode: str) -> LARPTokenizer:
    torch.manual_seed(0)
    model = LARPTokenizer(TokenizerConfig.preset("L", prior=None)).eval()
    torch.nn.init.normal_(model.head.linear.weight, std=0.02)
    if mode in ("bf16", "bf16-compile"):
        model = model.to(torch.bfloat16)
    return model


def time_mode(mode: str, repeats: int) -> dict:
    model = build_model(mode)
    clip = torch.rand(1, 3, 16, 128, 128)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16-autocast" else contextlib.nullcontext()
    dtype = torch.bfloat16 if mode in ("bf16", "bf16-compile") else torch.float32
    encode, decode = (lambda video: model.encode(video).codes), model.decode_codes
    if mode.endswith("-compile"):
        encode, decode = torch.compile(encode), torch.compile(decode)

    def run() -> torch.Tensor:
        with torch.inference_mode(), context:
            return decode(encode(clip.to(dtype)).to(dtype))

    start = time.perf_counter()
    run()  # warm-up (and compilation)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {
        "mode": mode,
        "best_s": min(times),
        "median_s": sorted(times)[len(times) // 2],
        "warmup_s": warmup,
        "runs": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16-autocast", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for mode in args.modes:
        print(json.dumps(time_mode(mode, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
