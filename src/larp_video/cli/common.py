"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from larp_video.runtime import PRECISIONS


def add_model_arguments(parser: argparse.ArgumentParser, batch_unit: str = "windows") -> None:
    parser.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        help="tokenizer: a model directory, a Hugging Face Hub id, or a training .ckpt "
        "(default: the small tokenizer bundled with the package)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, or bf16 weights and activations (faster on CPUs with AVX-512 BF16 and on GPUs; "
        "a few codes may differ from fp32)",
    )
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help=f"{batch_unit} per forward pass (default: 4)")


def add_fit_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fit",
        choices=("crop", "pad"),
        default="crop",
        help="crop: resize the short side to the model size and keep the centre square (default); "
        "pad: keep the whole frame, padded to a square, and crop the padding off after decoding",
    )


def load_model_from_args(args: argparse.Namespace):
    from larp_video.cli.main import UsageError
    from larp_video.pretrained import load_tokenizer
    from larp_video.runtime import cast_for_inference, resolve_device

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from error
    model, name = load_tokenizer(args.model, device=device)
    return cast_for_inference(model, args.precision), name
