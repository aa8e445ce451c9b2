"""Reading generators out of ``larp train generator`` checkpoints, and exporting them."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from larp_video.models.generator import GeneratorConfig, LARPGenerator
from larp_video.models.hub import load_checkpoint_file, strip_state_dict_prefixes

TRAINING_INFO_NAME = "training.json"
CLASSES_NAME = "classes.txt"


@dataclasses.dataclass
class GeneratorCheckpoint:
    """A generator and what its training run recorded about its tokens."""

    model: LARPGenerator
    token_settings: dict[str, Any] | None  # settings of the training tokens (tokenizer hashes, clip shape)
    class_names: dict[int, str]  # label -> class name; empty when unknown
    global_step: int | None = None


def read_generator_checkpoint(path: str | os.PathLike) -> GeneratorCheckpoint:
    """Build the generator saved in a ``larp train generator`` checkpoint (``.ckpt``)."""
    checkpoint = load_checkpoint_file(path, "generator_config", "generator")
    config = GeneratorConfig.from_dict(checkpoint["generator_config"])

    prefix = "generator."
    state = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    model = LARPGenerator(config)
    model.load_state_dict(strip_state_dict_prefixes(state), strict=True)
    names = checkpoint.get("class_names") or {}
    return GeneratorCheckpoint(
        model=model,
        token_settings=checkpoint.get("token_settings"),
        class_names={int(label): name for label, name in names.items()},
        global_step=checkpoint.get("global_step"),
    )


def generator_from_lightning_checkpoint(path: str | os.PathLike) -> LARPGenerator:
    """Return the generator of a ``larp train generator`` checkpoint."""
    return read_generator_checkpoint(path).model


def export_generator(
    checkpoint: GeneratorCheckpoint,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    source: str = "",
) -> Path:
    """Write the generator as ``config.json`` + ``model.safetensors``, plus what training recorded.

    ``training.json`` stores the token settings, the step and ``source``. ``classes.txt`` (line
    i names class i) is written when the checkpoint stores class names.
    """
    directory = checkpoint.model.save_pretrained(directory, dtype=dtype)
    info = {"source": source, "global_step": checkpoint.global_step, "token_settings": checkpoint.token_settings}
    (directory / TRAINING_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if checkpoint.class_names:
        names = checkpoint.class_names
        lines = [names.get(label, "") for label in range(max(names) + 1)]
        (directory / CLASSES_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory
