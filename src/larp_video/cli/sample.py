"""``larp sample --generator G -o DIR``: generated videos as files, one mp4 per sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from larp_video.runtime import PRECISIONS

DEFAULT_CFG_SCALE = 1.25  # the released LARP generator's guidance scale


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``larp sample`` and ``larp predict``."""
    parser.add_argument(
        "--generator",
        required=True,
        metavar="PATH_OR_ID",
        help="generator: a `larp train generator` .ckpt, a model directory (e.g. from `larp export-generator`) "
        "or a Hugging Face Hub id such as hywang66/LARP-L-long-AR",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="PATH_OR_ID",
        help="tokenizer that decodes the tokens: a model directory, Hub id or .ckpt "
        "(default: the small tokenizer bundled with the package)",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 keeps all (default: 0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 keeps all (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed; sample i uses a stream derived from (seed, i) (default: 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="fp32, or bf16 autocast for both models (default: fp32)"
    )
    parser.add_argument("--fit", choices=("crop", "pad"), default="crop", help="frame prediction: how real frames are fitted (default: crop)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample videos from a generator to mp4 files, with grids and a JSON record",
        description="Generate one mp4 per sample (named 000000.mp4, 000001.mp4, ...), grid.gif and grid.png of the "
        "first videos, and samples.json with every parameter, label and seed. Class-conditional: --class picks "
        "classes (ids or names), -n samples each. --plan PLAN.csv (from `larp eval generation|frame-prediction "
        "--plan-only`) makes one sample per plan row, named by its sample number, ready for `larp eval ... "
        "--samples DIR`. Under `torchrun --no-python larp sample ...` process r makes the samples i with "
        "i % world_size == r. Every sample has its own random stream, so its draws do not depend on the process count.",
    )
    add_generation_arguments(parser)
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the videos, grids and samples.json")
    parser.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME_OR_ID",
        help="class to sample, by id or name; repeat for several (default: every class); 'null' is unconditional",
    )
    parser.add_argument("-n", "--num-samples", type=int, default=1, help="samples per class (default: 1)")
    parser.add_argument("--plan", metavar="CSV", help="sample one video per row of a `larp eval ... --plan-only` plan")
    parser.add_argument("--manifest", help="CSV manifest whose action column names the classes")
    parser.add_argument("--classes-file", metavar="TXT", help="classes.txt naming class i on line i")
    parser.add_argument(
        "--cfg-scale",
        type=float,
        help=f"classifier-free guidance scale (default: {DEFAULT_CFG_SCALE} class-conditional, 1.0 frame prediction)",
    )
    parser.add_argument(
        "--cfg-schedule", choices=("constant", "linear", "cosine"), default="constant", help="guidance schedule over tokens"
    )
    parser.add_argument("--conditioning-frames", type=int, default=5, help="frame prediction with --plan: frames given (default: 5)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per generator batch (default: 8)")
    parser.add_argument("--fps", type=float, default=16.0, help="frame rate of the written videos (default: 16)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 constant rate factor, 0 is lossless (default: 18)")
    parser.add_argument("--grid", type=int, default=32, metavar="N", help="videos shown in grid.gif and grid.png (default: 32; 0: none)")
    parser.add_argument("--resume", action="store_true", help="keep the videos already in DIR and make the missing ones")
    parser.set_defaults(run=run)


def load_generation_models(args: argparse.Namespace, device):
    """Load the generator and the tokenizer on ``device`` and check that they fit together."""
    from larp_video.cli.main import UsageError
    from larp_video.generation.loading import check_tokenizer_fits, load_generator
    from larp_video.pretrained import load_tokenizer

    loaded = load_generator(args.generator, device=device)
    tokenizer, tokenizer_name = load_tokenizer(args.tokenizer, device=device)
    try:
        check_tokenizer_fits(loaded, tokenizer, tokenizer_name)
    except ValueError as error:
        raise UsageError(str(error)) from error
    return loaded, tokenizer, tokenizer_name


def sampling_settings(args: argparse.Namespace, **values):
    """Return the ``SamplingSettings`` of the shared generation options, with ``values`` added."""
    from larp_video.generation.sample_files import SamplingSettings

    return SamplingSettings(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        precision=args.precision,
        fit=args.fit,
        **values,
    )


def resolve_device_argument(args: argparse.Namespace):
    from larp_video.cli.main import UsageError
    from larp_video.runtime import resolve_device

    try:
        return resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from error


def run(args: argparse.Namespace) -> int:
    from larp_video.cli.main import UsageError
    from larp_video.evaluation.distributed import process_group
    from larp_video.generation.sample_files import SamplingJob, run_sampling

    if args.plan and args.classes:
        raise UsageError("--plan sets the classes; pass --plan or --class, not both")
    with process_group(resolve_device_argument(args)) as device:
        loaded, tokenizer, tokenizer_name = load_generation_models(args, device)
        frame_prediction = loaded.model.config.frame_prediction
        cfg_scale = args.cfg_scale
        if cfg_scale is None:
            cfg_scale = 1.0 if frame_prediction else DEFAULT_CFG_SCALE
        if frame_prediction and cfg_scale != 1.0:
            raise UsageError(f"--cfg-scale is {cfg_scale}, but frame-prediction generators have no guidance; use 1.0")
        settings = sampling_settings(
            args, cfg_scale=cfg_scale, cfg_schedule=args.cfg_schedule, conditioning_frames=args.conditioning_frames
        )
        job = SamplingJob(
            requests=build_requests(args, loaded),
            output_dir=args.output_dir,
            settings=settings,
            batch_size=args.batch_size,
            fps=args.fps,
            crf=args.crf,
            resume=args.resume,
            grid_videos=args.grid,
        )
        record = run_sampling(job, loaded, tokenizer, tokenizer_name)
    # The process that finishes last writes the grids and the record, and reports them.
    if record["status"] == "complete":
        output = Path(args.output_dir)
        print(f"wrote {len(job.requests)} videos to {output} ({record.get('wall_time_seconds', 0):.1f} s)")
        for path in record.get("grids", []):
            print(f"  {path}")
        print(f"  {output / 'samples.json'}")
    return 0


def build_requests(args: argparse.Namespace, loaded):
    """Turn --plan, or --class and -n, into numbered sample requests."""
    from larp_video.cli.main import UsageError
    from larp_video.evaluation.chunks import read_plan
    from larp_video.generation.requests import (
        class_names_from_file,
        class_names_from_manifest,
        class_requests,
        plan_requests,
        resolve_class,
    )

    config = loaded.model.config
    if args.plan:
        requests = plan_requests(read_plan(args.plan))
        labels = {request.label for request in requests}
        if not config.frame_prediction and max(labels) >= config.num_classes:
            raise UsageError(
                f"plan {args.plan} has labels up to {max(labels)} but the generator has {config.num_classes} classes; "
                "draw the plan from the manifest the generator was trained on"
            )
        return requests
    if config.frame_prediction:
        raise UsageError(
            "a frame-prediction generator needs real first frames: pass --plan from `larp eval frame-prediction "
            "--plan-only`, or use `larp predict VIDEO`"
        )
    names = dict(loaded.class_names)
    if args.manifest:
        names.update(class_names_from_manifest(args.manifest))
    if args.classes_file:
        names.update(class_names_from_file(args.classes_file))
    specs = args.classes or [str(label) for label in range(config.num_classes)]
    labels = [resolve_class(spec, names, config.num_classes) for spec in specs]
    return class_requests(labels, args.num_samples, names)
