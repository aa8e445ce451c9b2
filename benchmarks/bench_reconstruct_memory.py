"""Peak memory of reconstructing a long 720p video with the bundled tokenizer.

The input is the demo clip (1280 x 720, 20 fps) looped to the requested length, written once
to a temporary H.264 file. Frames stream through windows, so the peak resident memory should
not grow with the video's length. Prints the peak RSS of this process (``ru_maxrss``) after
the reconstruction, the wall time and the video length.

Usage: python benchmarks/bench_reconstruct_memory.py [--minutes 10] [--workdir /tmp/larp-bench]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time
from pathlib import Path

from larp_video.data.video_io import VideoWriter, iter_video, probe_video
from larp_video.pretrained import load_tokenizer
from larp_video.reconstruct import reconstruct_video

DEMO_CLIP = Path(__file__).resolve().parents[1] / "assets" / "demo" / "cockatoo.mp4"


def write_long_video(path: Path, minutes: float) -> None:
    """Loop the demo clip to ``minutes``, streaming it chunk by chunk."""
    info = probe_video(DEMO_CLIP)
    total = int(minutes * 60 * info.fps)
    written = 0
    with VideoWriter(path, info.fps, preset="ultrafast", crf=23) as writer:
        while written < total:
            for chunk in iter_video(DEMO_CLIP, 64):
                chunk = chunk[: total - written]
                writer.write(chunk)
                written += chunk.shape[0]
                if written >= total:
                    break


def make_long_video(path: Path, minutes: float) -> Path:
    """Write the long input in a child process, so its memory does not count here."""
    if not path.exists():
        child = multiprocessing.Process(target=write_long_video, args=(path, minutes))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"writing {path} failed with exit code {child.exitcode}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workdir", default="/tmp/larp-bench")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    video = make_long_video(workdir / f"long-{args.minutes:g}min-720p.mp4", args.minutes)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model, name = load_tokenizer(None)
    if args.precision == "bf16":
        from larp_video.runtime import cast_for_inference

        model = cast_for_inference(model, "bf16")
    started = time.perf_counter()
    result = reconstruct_video(video, model, workdir / "reconstruction.mp4", precision=args.precision, progress=True, model_name=name)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "video": str(video),
                "frames": result.num_frames,
                "duration_s": result.duration_seconds,
                "source_size": result.source_size,
                "peak_rss_mib": round(peak, 1),
                "peak_rss_mib_before_reconstruction": round(rss_before, 1),
                "wall_time_s": round(elapsed, 1),
                "psnr": round(result.psnr, 3),
                "load_average": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
