"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from larp_video.runtime import PRECISIONS


class UsageError(Exception):
    """Bad input from the user: printed as one line without a traceback, exit status 2.

    It is defined here rather than in ``main`` so that ``python -m larp_video.cli.main``, which
    runs ``main`` a second time as ``__main__``, still catches the one class that handlers raise.
    """


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


def check_output_file(path: str, suffixes: tuple[str, ...], hint: str = "") -> Path:
    """Raise ``UsageError`` unless ``path`` can be written as a file with one of ``suffixes``.

    Runs before the model loads, so a typo in ``-o`` fails at once. A missing folder is fine
    (the commands create it), but a folder in its place or a file among its parents is not.
    """
    output = Path(path)
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory; pass a file path such as {output / ('output' + suffixes[0])}")
    if output.suffix.lower() not in suffixes:
        advice = f"; {hint}" if hint else ""
        raise UsageError(f"-o {output} must end in {' or '.join(suffixes)}{advice}")

    ancestor = output.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot write {output}: {ancestor} is a file, not a folder")
    return output


def check_output_dir(path: str, source: str | None = None) -> Path:
    """Raise ``UsageError`` unless ``path`` can be a model directory that is not ``source``.

    Writing into the source directory would replace the model being converted, so it is rejected.
    """
    output = Path(path)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output} is a file; pass a directory for config.json and model.safetensors")
    if source is not None and output.is_dir() and Path(source).is_dir() and output.resolve() == Path(source).resolve():
        raise UsageError(f"-o {output} is the source directory; write the converted model to another directory")
    return output


def check_input_video(path: str) -> None:
    """Raise ``VideoReadError`` unless ``path`` opens as a video with a video stream."""
    from larp_video.data.video_decoding import open_video

    with open_video(path):
        pass
