"""``larp export-generator CKPT -o DIR``: a training checkpoint's generator in the model-directory layout."""

from __future__ import annotations

import argparse

from larp_video.cli.common import check_output_dir

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-generator",
        help="write the generator of a `larp train generator` checkpoint as config.json + model.safetensors",
        description="Save the generator of a training .ckpt in the save_pretrained layout (loadable with "
        "LARPGenerator.from_pretrained and `larp sample --generator DIR`), with classes.txt and training.json "
        "(the token settings and step of the run).",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by `larp train generator`")
    parser.add_argument("-o", "--output", required=True, help="directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the saved weights (default: fp32)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from larp_video.training.generator_checkpoints import export_generator, read_generator_checkpoint

    check_output_dir(args.output)
    checkpoint = read_generator_checkpoint(args.checkpoint)
    directory = export_generator(checkpoint, args.output, dtype=getattr(torch, DTYPES[args.dtype]), source=args.checkpoint)
    parameters = sum(parameter.numel() for parameter in checkpoint.model.parameters())
    print(f"wrote {directory} ({parameters / 1e6:.1f} M parameters, step {checkpoint.global_step}) from {args.checkpoint}")
    return 0
