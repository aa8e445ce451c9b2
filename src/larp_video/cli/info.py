"""``larp info [MODEL]``: what a tokenizer is and what its tokens cost."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a tokenizer: clip size, tokens, codebook, parameters",
        description="Print a tokenizer's configuration, size and token rate.",
    )
    parser.add_argument("model", nargs="?", help="model directory, Hub id or .ckpt (default: the bundled tokenizer)")
    parser.add_argument("--json", action="store_true", help="print the configuration as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from larp_video.pretrained import load_tokenizer

    model, name = load_tokenizer(args.model)
    config = model.config
    if args.json:
        print(json.dumps({"model": name, "config": config.to_dict()}, indent=2))
        return 0

    grid_t, grid_h, grid_w = config.grid
    pixels = config.num_frames * config.image_size**2
    print(f"model                {name}")
    print(f"clip                 {config.num_frames} frames x {config.image_size} x {config.image_size}")
    print(f"patch grid           {grid_t} x {grid_h} x {grid_w} = {config.num_patches} patches of "
          f"{config.temporal_patch_size} x {config.patch_size} x {config.patch_size}")
    print(f"tokens per clip      {config.num_tokens}")
    print(f"codebook             {config.codebook_size} codes of dimension {config.code_dim}")
    print(f"bits per clip        {config.bits_per_clip:.0f} ({config.bits_per_clip / pixels:.4f} bits per pixel)")
    print(f"tokens per second    {config.num_tokens / config.num_frames:.2f} x frame rate "
          f"({config.num_tokens / config.num_frames * 25:.0f} at 25 fps)")
    print(f"encoder              width {config.encoder_width}, depth {config.encoder_depth}, {config.encoder_heads} heads")
    print(f"decoder              width {config.decoder_width}, depth {config.decoder_depth}, {config.decoder_heads} heads")
    prior = config.prior
    prior_text = f"depth {prior.depth}, width {prior.width}, {prior.heads} heads" if prior else "none"
    print(f"prior                {prior_text}")
    total = model.num_parameters()
    without_prior = model.num_parameters(include_prior=False)
    print(f"parameters           {without_prior / 1e6:.2f} M (+ {(total - without_prior) / 1e6:.2f} M prior)")
    return 0
