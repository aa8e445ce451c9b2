"""``larp train tokenizer|generator --config FILE``: training through LightningCLI.

Everything after the model kind goes to LightningCLI, so every argument of the training module
(``--model.*``), the data module (``--data.*``) and the Lightning Trainer (``--trainer.*``) can
be set in the YAML file or on the command line. ``--resume PATH|last`` continues a run.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)

HELP = "train a tokenizer or a generator (LightningCLI; see `larp train tokenizer --help`)"

TRAINERS = {
    "tokenizer": ("larp_video.training.tokenizer_module:TokenizerTrainingModule", "larp_video.data.datamodule:VideoDataModule"),
    "generator": ("larp_video.training.generator_module:GeneratorTrainingModule", "larp_video.data.token_datamodule:TokenDataModule"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TRAINERS:
        print(f"usage: larp train {{{','.join(TRAINERS)}}} --config FILE [LightningCLI options]", file=sys.stderr)
        print(HELP, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2

    from larp_video.training.cli import run_training

    module_path, data_path = TRAINERS[argv[0]]
    return run_training(module_path, data_path, argv[1:])
