"""``larp predict VIDEO --generator G -o OUT.mp4``: continue a video's first frames with a frame-prediction generator."""

from __future__ import annotations

import argparse

from larp_video.cli.common import check_output_file
from larp_video.cli.sample import (
    add_generation_arguments,
    load_generation_models,
    resolve_device_argument,
    sampling_settings,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict a clip from the first frames of a video (frame-prediction generator)",
        description="Give the first --frames frames from --start-frame to a frame-prediction generator (coded as a "
        "clip that repeats the last given frame), sample the tokens of the whole clip and decode them. Writes "
        "OUT.mp4 and OUT-prediction.json; when the video has a whole clip from --start-frame, also "
        "OUT-side-by-side.mp4 (real | predicted) and OUT-grid.png.",
    )
    parser.add_argument("video", help="input video file")
    parser.add_argument("-o", "--output", required=True, help="mp4 file for the predicted clip")
    add_generation_arguments(parser)
    parser.add_argument("--frames", type=int, default=5, help="frames given to the generator (default: 5)")
    parser.add_argument("--start-frame", type=int, default=0, help="first given frame (default: 0)")
    parser.add_argument("--fps", type=float, help="frame rate of the written videos (default: the input's)")
    parser.add_argument("--no-side-by-side", action="store_true", help="skip the side-by-side video and the grid")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from larp_video.cli.main import UsageError
    from larp_video.data.video_writer import MP4_SUFFIXES
    from larp_video.generation.predict import predict_video

    if args.start_frame < 0:
        raise UsageError(f"--start-frame must be 0 or more, got {args.start_frame}")
    check_output_file(args.output, MP4_SUFFIXES)
    loaded, tokenizer, _ = load_generation_models(args, resolve_device_argument(args))
    settings = sampling_settings(args, conditioning_frames=args.frames)
    result = predict_video(
        args.video,
        loaded,
        tokenizer,
        args.output,
        settings,
        start_frame=args.start_frame,
        fps=args.fps,
        side_by_side=not args.no_side_by_side,
    )
    print(f"generator        {loaded.name}")
    print(f"given frames     {result.start_frame} to {result.start_frame + result.conditioning_frames - 1} of {result.input}")
    print(f"predicted clip   {result.clip_frames} frames at {result.fps:.3f} fps")
    if result.psnr_predicted_frames is not None:
        print(f"PSNR             {result.psnr_predicted_frames:.2f} dB (frames after the given ones, against the real ones)")
    print(f"wall time        {result.wall_time_seconds:.1f} s")
    print("wrote:")
    for path in (result.output, result.side_by_side, result.grid, result.record):
        if path:
            print(f"  {path}")
    return 0
