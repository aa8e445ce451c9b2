"""Benchmark LARPGenerator sampling: tokens/s with and without the KV cache, fp32 and bf16 autocast.

Every size generates ``--num-tokens`` tokens per video (1024 by default, LARP's clip length)
for a batch of ``--batch-size`` videos, with random weights (the head is random too, so that
sampling does not draw from uniform distributions). Cached sampling is timed in full.
Uncached sampling is timed in full for the sizes in ``--full-uncached-sizes``, and estimated
for the others, because a full uncached fp32 run of the L size takes about 40 minutes (by this
estimate) on 2 CPU cores. One uncached step at sequence length l costs one forward pass over l positions. The estimate
times forward passes at a few lengths, interpolates linearly between them and sums over the
lengths 1 .. N that the steps use. For the fully timed sizes the estimate is reported too, as
a check of the method.

Other processes on the machine distort the numbers badly: two processes that each run 2
OpenMP threads on 2 cores made batch-1 decoding of the tiny size 45x slower. Run it on an
idle machine if you can. The report states the load average before and after the run and the spread of a
fixed weight-reading pass, so a reader can judge how busy the machine was.

Run from the repository root:

    PYTHONPATH=src python benchmarks/bench_generator_sampling.py --markdown docs/benchmarks.md

``--markdown`` replaces the "## Generator sampling" section of that file (or appends it) and
leaves the other sections alone. The script exits with status 1 when cached sampling is less
than ``--min-speedup`` times faster than uncached sampling.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from larp_video.models.generator import LARPGenerator, generator_config

SECTION_TITLE = "## Generator sampling"
PRECISIONS = ("fp32", "bf16 autocast")
# Sequence lengths at which uncached steps are timed when they are estimated.
ESTIMATE_LENGTHS = (1, 64, 256, 512, 768, 1024)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "L"], help="generator sizes to time (tiny, B, L, LP)")
    parser.add_argument("--num-tokens", type=int, default=1024, help="tokens generated per video")
    parser.add_argument("--batch-size", type=int, default=1, help="videos generated at once")
    parser.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale; not 1 doubles the rows")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per setting; medians are reported"
    )
    parser.add_argument(
        "--full-uncached-sizes", nargs="*", default=["tiny"], help="sizes whose uncached sampling is timed in full"
    )
    parser.add_argument("--min-speedup", type=float, default=5.0, help="required cached/uncached speed ratio")
    parser.add_argument("--markdown", type=Path, help="markdown file whose generator-sampling section is rewritten")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of sampling")
    return parser.parse_args(argv)


def build_model(size: str, num_tokens: int, seed: int) -> LARPGenerator:
    torch.manual_seed(seed)
    model = LARPGenerator(generator_config(size, num_tokens=num_tokens)).eval()
    torch.nn.init.normal_(model.head.weight, std=model.config.initializer_range)
    return model


def precision_context(precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def time_generation(
    model: LARPGenerator, args: argparse.Namespace, precision: str, use_cache: bool, seed: int
) -> float:
    """Return the wall time in seconds of generating ``args.num_tokens`` tokens once."""
    labels = torch.arange(args.batch_size) % model.config.num_classes
    generator = torch.Generator().manual_seed(seed)
    with precision_context(precision):
        start = time.perf_counter()
        model.generate(labels, args.num_tokens, cfg_scale=args.cfg_scale, generator=generator, use_cache=use_cache)
        return time.perf_counter() - start


@torch.no_grad()
def estimate_uncached(model: LARPGenerator, args: argparse.Namespace, precision: str) -> float:
    """Estimate the uncached generation time from forward passes at ``ESTIMATE_LENGTHS``.

    Uncached step i runs the decoder over P + i positions. The per-length time is interpolated
    linearly between the timed lengths and summed over all steps. Like ``generate`` this runs
    under no_grad, not inference_mode, because inference_mode disables autocast's weight cache.
    """
    config = model.config
    rows = args.batch_size * (2 if args.cfg_scale != 1.0 else 1)
    step_lengths = [config.prefix_length + step for step in range(args.num_tokens)]
    timed_lengths = sorted({min(length, step_lengths[-1]) for length in ESTIMATE_LENGTHS} | {step_lengths[0]})

    seconds = {}
    for length in timed_lengths:
        embeddings = torch.randn(rows, length, config.dim)
        with precision_context(precision):
            model.head(model.decode(embeddings)[:, -1])  # warm-up for this shape
            start = time.perf_counter()
            model.head(model.decode(embeddings)[:, -1])
            seconds[length] = time.perf_counter() - start

    total = 0.0
    for length in step_lengths:
        upper = next(index for index, timed in enumerate(timed_lengths) if timed >= length)
        if timed_lengths[upper] == length or upper == 0:
            total += seconds[timed_lengths[upper]]
            continue
        low, high = timed_lengths[upper - 1], timed_lengths[upper]
        weight = (length - low) / (high - low)
        total += (1 - weight) * seconds[low] + weight * seconds[high]
    return total


@torch.no_grad()
def weight_pass_times(model: LARPGenerator, passes: int = 20) -> list[float]:
    """Time fp32 passes of one input row through every linear layer, in ms, to show machine noise.

    Such a pass reads every weight once, like a batch-1 decoding step, so its spread across
    passes shows how much the machine's memory bandwidth varies during the benchmark.
    """
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        for linear in linears:
            linear(torch.ones(1, linear.in_features))
        times.append((time.perf_counter() - start) * 1e3)
    return times


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def run(args: argparse.Namespace) -> tuple[list[dict], list[dict], dict[str, list[float]]]:
    rows, speedups, noise = [], [], {}
    for size in args.sizes:
        model = build_model(size, args.num_tokens, args.seed)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        noise[size] = weight_pass_times(model)
        for precision in PRECISIONS:
            with precision_context(precision):
                model.generate(torch.zeros(args.batch_size, dtype=torch.long), min(8, args.num_tokens))  # warm-up

            # Each repeat times cached and uncached sampling back to back, so that a busy period
            # of the shared machine affects both, and the speedup is the median of these pairs.
            full_uncached = size in args.full_uncached_sizes
            samples: dict[str, list[float]] = {"cached": [], "uncached": [], "estimated": []}
            for repeat in range(args.repeats):
                samples["cached"].append(time_generation(model, args, precision, True, args.seed + repeat))
                samples["estimated"].append(estimate_uncached(model, args, precision))
                if full_uncached:
                    samples["uncached"].append(time_generation(model, args, precision, False, args.seed + repeat))
            if not full_uncached:
                samples["uncached"] = samples["estimated"]

            measurements = [(True, "cached", "timed")]
            if full_uncached:
                measurements += [(False, "uncached", "timed"), (False, "estimated", "estimated (check)")]
            else:
                measurements.append((False, "uncached", "estimated"))
            tokens = args.batch_size * args.num_tokens
            for use_cache, key, method in measurements:
                seconds = statistics.median(samples[key])
                row = {"size": size, "parameters": parameters, "precision": precision, "cache": use_cache,
                       "seconds": seconds, "tokens_per_second": tokens / seconds, "method": method}
                rows.append(row)
                print(format_row(row), flush=True)
            ratios = [uncached / cached for cached, uncached in zip(samples["cached"], samples["uncached"])]
            speedups.append({"size": size, "precision": precision, "speedup": statistics.median(ratios),
                             "range": (min(ratios), max(ratios))})
        noise[size] += weight_pass_times(model)
        del model
    return rows, speedups, noise


def format_row(row: dict) -> str:
    cache = "yes" if row["cache"] else "no"
    return (
        f"| {row['size']} | {row['parameters'] / 1e6:.1f}M | {row['precision']} | {cache} | "
        f"{row['seconds']:.2f} | {row['tokens_per_second']:.1f} | {row['method']} |"
    )


def machine_description() -> str:
    model_name = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()}-core {model_name} CPU, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def render_section(
    args: argparse.Namespace, rows: list[dict], speedups: list[dict], noise: dict[str, list[float]]
) -> str:
    command = "PYTHONPATH=src python benchmarks/bench_generator_sampling.py " + shlex.join(sys.argv[1:])
    lines = [
        SECTION_TITLE,
        "",
        f"Sampling throughput of `LARPGenerator.generate` with random weights, {args.num_tokens} tokens per "
        f"video, batch {args.batch_size}, guidance scale {args.cfg_scale}, temperature 1, median of "
        f"{args.repeats} runs. Tokens/s counts generated tokens over wall time, prefill included. Each "
        "repeat times cached and uncached sampling back to back, and the speedup is the median of "
        "the per-repeat ratios.",
        "",
        f"- Machine: {machine_description()}.",
        f"- Command: `{command.strip()}`",
        "- \"estimated\" rows were not run in full: forward passes were timed at sequence lengths "
        f"{', '.join(str(length) for length in ESTIMATE_LENGTHS)}, interpolated linearly and summed over the "
        "lengths the uncached steps use. \"estimated (check)\" rows apply the same method to a size that "
        "was also timed in full.",
        f"- Machine load (1 / 5 / 15 minute load averages, {os.cpu_count()} cores): {args.load_before} before "
        f"the run, {load_average()} after it. A load above the core count means that other processes "
        "shared the cores.",
        "- Machine noise: one fp32 pass of a single row through every linear layer (what a batch-1 "
        "decoding step reads) was timed 20 times before and 20 times after each size's runs. Its "
        "spread (min / median / max) shows how much the shared machine's speed varied: "
        + "; ".join(
            f"{size} {min(times):.1f} / {statistics.median(times):.1f} / {max(times):.1f} ms"
            for size, times in noise.items()
        )
        + ".",
        "",
        "| size | parameters | precision | KV cache | seconds | tokens/s | measurement |",
        "|---|---|---|---|---|---|---|",
        *[format_row(row) for row in rows],
        "",
        "| size | precision | cached speedup over uncached (median, min - max of the repeats) |",
        "|---|---|---|",
        *[
            f"| {item['size']} | {item['precision']} | {item['speedup']:.1f}x ({item['range'][0]:.1f} - "
            f"{item['range'][1]:.1f}) |"
            for item in speedups
        ],
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the generator-sampling section of ``path`` (or append it), keeping other sections."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION_TITLE + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION_TITLE))
        rest = "" if end < 0 else text[end + 1 :]
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_before = load_average()
    print(machine_description(), "load average", args.load_before, flush=True)
    rows, speedups, noise = run(args)
    section = render_section(args, rows, speedups, noise)
    print(section)
    if args.markdown is not None:
        write_section(args.markdown, section)

    too_slow = [item for item in speedups if item["speedup"] < args.min_speedup]
    for item in too_slow:
        print(f"cached sampling is only {item['speedup']:.1f}x faster than uncached for {item['size']} "
              f"{item['precision']}; expected at least {args.min_speedup}x", file=sys.stderr)
    return 1 if too_slow else 0


if __name__ == "__main__":
    sys.exit(main())
