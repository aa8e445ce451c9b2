"""``larp tokenize VIDEO -o TOKENS``: a video file of any length and size to a token file."""

from __future__ import annotations

import argparse
import logging

from larp_video.cli.common import (
    add_fit_argument,
    add_model_arguments,
    check_input_video,
    check_output_file,
    load_model_from_args,
)

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="turn a video file into a token file",
        description="Cut a video into windows of the model's clip length and write their tokens "
        "(deterministic codes) plus what decoding needs to a .safetensors file.",
    )
    parser.add_argument("video", help="input video file (any container and codec FFmpeg reads)")
    parser.add_argument("-o", "--output", required=True, help="token file to write (.safetensors)")
    add_model_arguments(parser)
    add_fit_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from larp_video.video_tokens import tokenize_video

    check_output_file(args.output, (".safetensors",), hint="to write a decoded video, use `larp reconstruct`")
    check_input_video(args.video)  # before the model loads, so a bad path fails at once
    model, name = load_model_from_args(args)
    tokens = tokenize_video(
        args.video,
        model,
        fit=args.fit,
        batch_size=args.batch_size,
        precision=args.precision,
        progress=True,
        model_name=name,
    )
    path = tokens.save(args.output)
    print(
        f"{tokens.num_frames} frames at {tokens.fps:.3f} fps -> {tokens.num_windows} windows x "
        f"{tokens.indices.shape[1]} tokens ({tokens.tokens_per_second:.0f} tokens/s of video, "
        f"{tokens.bits_per_pixel:.4f} bits per pixel)"
    )
    print(f"wrote {path}")
    return 0
