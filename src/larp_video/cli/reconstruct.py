"""``larp reconstruct VIDEO -o OUT.mp4``: encode and decode a video and measure the result."""

from __future__ import annotations

import argparse
from pathlib import Path

from larp_video.cli.common import (
    add_fit_argument,
    add_model_arguments,
    check_input_video,
    check_output_file,
    load_model_from_args,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="tokenize and decode a video, write the result and report PSNR, SSIM and rate",
        description="Send a video of any length and size through the tokenizer and back. Writes the "
        "reconstruction and a metrics JSON beside it; --side-by-side adds an original | reconstruction "
        "mp4 and a PNG grid of frames.",
    )
    parser.add_argument("video", help="input video file")
    parser.add_argument("-o", "--output", required=True, help="mp4 file for the reconstruction")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="also write OUTPUT-side-by-side.mp4 (original | reconstruction) and OUTPUT-grid.png",
    )
    add_model_arguments(parser)
    add_fit_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from larp_video.data.video_writer import MP4_SUFFIXES
    from larp_video.reconstruct import reconstruct_video

    check_output_file(args.output, MP4_SUFFIXES)
    check_input_video(args.video)  # before the model loads, so a bad path fails at once
    model, name = load_model_from_args(args)
    result = reconstruct_video(
        args.video,
        model,
        args.output,
        fit=args.fit,
        side_by_side=args.side_by_side,
        batch_size=args.batch_size,
        precision=args.precision,
        model_name=name,
    )
    output = Path(args.output)
    metrics_path = result.save_json(output.with_name(f"{output.stem}-metrics.json"))

    height, width = result.source_size
    print(f"model            {result.model}")
    print(f"input            {result.input} ({width}x{height}, {result.num_frames} frames, {result.fps:.3f} fps)")
    print(f"windows          {result.windows} x {result.tokens_per_window} tokens ({result.fit} to {result.model_size}x{result.model_size})")
    print(f"PSNR             {result.psnr:.2f} dB")
    print(f"SSIM             {result.ssim:.4f}")
    print(f"tokens/second    {result.tokens_per_second:.1f}")
    # Above `larp info`'s per-clip figure when the last window repeats frames to fill a clip.
    print(f"bits per pixel   {result.bits_per_pixel:.4f} (tokens of {result.windows} windows over {result.num_frames} frames)")
    print(f"wall time        {result.wall_time_seconds:.1f} s ({result.precision} on {result.device})")
    print("wrote:")
    for path in (result.output, result.side_by_side, result.grid, str(metrics_path)):
        if path:
            print(f"  {path}")
    return 0
