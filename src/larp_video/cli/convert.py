"""``larp convert SRC -o DST``: rewrite a tokenizer in our ``from_pretrained`` layout.

SRC is a released LARP checkpoint, a Hub id, one of our model directories, or a ``.ckpt`` of
``larp train tokenizer``. From a ``.ckpt`` it exports the EMA weights unless ``--no-ema``.
"""

from __future__ import annotations

import argparse

from larp_video.cli.common import check_output_dir

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="write a released LARP tokenizer or a training .ckpt in this package's from_pretrained layout",
        description="Load a tokenizer from a released LARP checkpoint directory, a Hub id, a training "
        ".ckpt or one of our model directories, and save it as config.json + model.safetensors. "
        "This is also the export of trained tokenizers: larp convert runs/x/checkpoints/last.ckpt -o DIR.",
    )
    parser.add_argument("source", help="model directory, Hub id (e.g. hywang66/LARP-L-long-tokenizer) or .ckpt")
    parser.add_argument("-o", "--output", required=True, help="directory to write")
    parser.add_argument(
        "--no-ema",
        action="store_true",
        help="from a training .ckpt, export the trained weights instead of their EMA",
    )
    parser.add_argument("--drop-prior", action="store_true", help="leave out the AR prior (used in training only)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the saved weights (default: fp32)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from larp_video.models.tokenizer import LARPTokenizer
    from larp_video.pretrained import load_tokenizer

    check_output_dir(args.output, source=args.source)
    model, name = load_tokenizer(args.source, use_ema=not args.no_ema)
    if args.drop_prior and model.prior is not None:
        stripped = LARPTokenizer(model.config.replace(prior=None))
        stripped.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("prior.")})
        model = stripped
    directory = model.save_pretrained(args.output, dtype=getattr(torch, DTYPES[args.dtype]))
    print(f"wrote {directory} ({model.num_parameters() / 1e6:.1f} M parameters) from {name}")
    return 0
