"""``larp tokenize-dataset MANIFEST -o DIR``: the codes of a dataset's clips, in shards, for generator training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from larp_video.cli.common import add_fit_argument, add_model_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenize-dataset",
        help="tokenize the clips of a video manifest into token shards for generator training",
        description="Write the deterministic codes of the clips of every manifest video to DIR as safetensors "
        "shards plus index.json. Rerunning the command skips finished shards, so it resumes an interrupted run. "
        "Under `torchrun --no-python larp tokenize-dataset ...` each process writes a disjoint set of shards, and "
        "the process that finishes last writes the index.",
    )
    parser.add_argument("manifest", help="CSV video list with the header id,path,action,label")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the shards and index.json")
    parser.add_argument(
        "--mode",
        choices=("chunks", "random"),
        default="random",
        help="chunks: every non-overlapping clip of every video (the gFVD protocol's enumeration); "
        "random: --clips-per-video seeded random clips per video (default)",
    )
    parser.add_argument("--clips-per-video", type=int, default=1, metavar="K", help="random mode: clips per video (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random mode: seed of the clip starts (default: 0)")
    parser.add_argument("--shard-size", type=int, default=64, metavar="N", help="videos per shard (default: 64)")
    parser.add_argument("--flip", action="store_true", help="also tokenize every clip mirrored horizontally")
    parser.add_argument(
        "--frame-prediction",
        action="store_true",
        help="also store the codes of each clip's first --conditioning-frames frames (padded to the clip length "
        "by repeating the last of them), the condition of a frame-prediction generator",
    )
    parser.add_argument(
        "--conditioning-frames", type=int, default=5, help="frame prediction: frames given (default: 5)"
    )
    parser.add_argument("--workers", type=int, default=0, help="video decoding processes (default: 0)")
    parser.add_argument(
        "--rank",
        type=int,
        help="this job's part of the shards when separate jobs (e.g. a SLURM array) share the work without "
        "torchrun; needs --world-size",
    )
    parser.add_argument("--world-size", type=int, help="number of jobs sharing the work (with --rank)")
    add_model_arguments(parser, batch_unit="clips")
    add_fit_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from larp_video.cli.main import UsageError
    from larp_video.data.token_extraction import TokenizeDatasetConfig, tokenize_dataset
    from larp_video.evaluation.distributed import RankInfo, process_group
    from larp_video.pretrained import load_tokenizer
    from larp_video.runtime import resolve_device

    if (args.rank is None) != (args.world_size is None):
        raise UsageError("--rank and --world-size go together; pass both or neither")
    config = TokenizeDatasetConfig(
        manifest=args.manifest,
        output_dir=args.output_dir,
        mode=args.mode,
        clips_per_video=args.clips_per_video,
        seed=args.seed,
        shard_size=args.shard_size,
        fit=args.fit,
        flip=args.flip,
        conditioning_frames=args.conditioning_frames if args.frame_prediction else None,
        batch_size=args.batch_size,
        precision=args.precision,
        workers=args.workers,
    )
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from error

    with process_group(device) as device:
        rank = RankInfo(args.rank, args.world_size) if args.rank is not None else RankInfo.current()
        model, name = load_tokenizer(args.model, device=device)
        summary = tokenize_dataset(config, model, name, rank)

    print(
        f"rank {rank.rank} of {rank.world_size}: wrote {summary['shards_written']} shards "
        f"({summary['clips_written']} clips), {summary['shards_skipped']} were already done"
    )
    for video in summary["skipped_videos"]:
        print(f"  skipped video {video['video_index']} ({video['path']}): {video['reason']}")
    if summary["index"]:
        print(f"wrote {summary['index']}")
        total_clips = json.loads(Path(summary["index"]).read_text())["total_clips"]
        if total_clips == 0:
            # Not a usage error: the arguments were fine, but no video of the manifest could be read.
            print(
                f"larp: error: no clip was written: no video of {args.manifest} could be read (reasons above); "
                f"fix the manifest, then delete {args.output_dir} and run again",
                file=sys.stderr,
            )
            return 1
    return 0
