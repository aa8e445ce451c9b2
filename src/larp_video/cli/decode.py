"""``larp decode TOKENS -o VIDEO``: a token file back to an mp4 video."""

from __future__ import annotations

import argparse

from larp_video.cli.common import add_model_arguments, check_output_file, load_model_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="turn a token file back into an mp4 video",
        description="Decode a token file written by `larp tokenize` to an H.264 mp4 with the original "
        "frame count and frame rate.",
    )
    parser.add_argument("tokens", help="token file (.safetensors) written by `larp tokenize`")
    parser.add_argument("-o", "--output", required=True, help="mp4 file to write")
    parser.add_argument(
        "--scale",
        choices=("source", "model"),
        default="source",
        help="source: resize to the original frame size (the centre square for crop-fitted tokens; default); "
        "model: keep the model's resolution",
    )
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from larp_video.data.transforms import tensor_to_frames
    from larp_video.data.video_io import VideoWriter
    from larp_video.data.video_writer import MP4_SUFFIXES
    from larp_video.video_tokens import TokenizedVideo, decode_video

    output = check_output_file(args.output, MP4_SUFFIXES)
    tokens = TokenizedVideo.load(args.tokens)
    model, _ = load_model_from_args(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(output, tokens.fps) as writer:
        for chunk in decode_video(
            tokens, model, scale=args.scale, batch_size=args.batch_size, precision=args.precision, progress=True
        ):
            writer.write(tensor_to_frames(chunk))
    print(f"wrote {args.output}: {tokens.num_frames} frames at {tokens.fps:.3f} fps")
    return 0
