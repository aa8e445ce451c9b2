"""Finding and loading tokenizers: the bundled default, model directories, Hub ids and
Lightning training checkpoints."""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

import torch

from larp_video.models.tokenizer import LARPTokenizer

logger = logging.getLogger(__name__)

DEFAULT_TOKENIZER_NAME = "larp-demo-tokenizer"


def default_tokenizer_dir() -> Path:
    """Directory of the small tokenizer shipped with the package."""
    return Path(str(resources.files("larp_video") / "assets" / DEFAULT_TOKENIZER_NAME))


def load_tokenizer(
    spec: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
) -> tuple[LARPTokenizer, str]:
    """Load a tokenizer and return it in eval mode with a display name.

    ``spec`` is None (the bundled default), a model directory, a Hugging Face Hub id, or a
    ``.ckpt`` written by ``larp train tokenizer`` (its EMA weights when present and
    ``use_ema``).
    """
    if spec is None:
        directory = default_tokenizer_dir()
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"the bundled default tokenizer is missing from {directory}; reinstall larp-video or pass --model"
            )
        model, name = LARPTokenizer.from_pretrained(directory), DEFAULT_TOKENIZER_NAME
    elif str(spec).endswith(".ckpt"):
        from larp_video.training.checkpoints import tokenizer_from_lightning_checkpoint

        model, name = tokenizer_from_lightning_checkpoint(spec, use_ema=use_ema), str(spec)
    else:
        model, name = LARPTokenizer.from_pretrained(spec), str(spec)
    return model.to(device).eval(), name
