"""Loading a generator with the class names and token settings of its training, and checking it against a tokenizer."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import torch

from larp_video.data.token_shards import settings_sha256
from larp_video.generation.requests import class_names_from_file
from larp_video.models.generator import LARPGenerator
from larp_video.models.hub import resolve_pretrained_dir
from larp_video.models.tokenizer import LARPTokenizer
from larp_video.training.generator_checkpoints import CLASSES_NAME, TRAINING_INFO_NAME, read_generator_checkpoint

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedGenerator:
    """A generator in eval mode, its display name, class names and training-token settings."""

    model: LARPGenerator
    name: str
    class_names: dict[int, str]
    token_settings: dict[str, Any] | None


def load_generator(spec: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load a generator from a ``.ckpt`` of ``larp train generator``, a model directory or a Hub id.

    Directories written by ``larp export-generator`` also give ``classes.txt`` and the token
    settings in ``training.json``; released checkpoints give neither.
    """
    if str(spec).endswith(".ckpt"):
        checkpoint = read_generator_checkpoint(spec)
        loaded = LoadedGenerator(checkpoint.model, str(spec), checkpoint.class_names, checkpoint.token_settings)
    else:
        directory = resolve_pretrained_dir(spec)
        model = LARPGenerator.from_pretrained(directory)
        names = class_names_from_file(directory / CLASSES_NAME) if (directory / CLASSES_NAME).is_file() else {}
        settings = None
        if (directory / TRAINING_INFO_NAME).is_file():
            settings = json.loads((directory / TRAINING_INFO_NAME).read_text(encoding="utf-8")).get("token_settings")
        loaded = LoadedGenerator(model, str(spec), names, settings)
    loaded.model.to(device).eval()
    return loaded


def check_tokenizer_fits(generator: LoadedGenerator, tokenizer: LARPTokenizer, tokenizer_name: str) -> None:
    """Raise ``ValueError`` when the tokenizer's codes cannot be the generator's tokens.

    A tokenizer whose config differs from the one recorded at training time only logs a
    warning: a converted copy of the same tokenizer is fine, another tokenizer gives noise.
    """
    config = generator.model.config
    tokens = tokenizer.config
    if config.vocab_size != tokens.codebook_size or config.num_tokens != tokens.num_tokens:
        raise ValueError(
            f"generator {generator.name} models {config.num_tokens} tokens from a codebook of {config.vocab_size}, "
            f"but tokenizer {tokenizer_name} makes {tokens.num_tokens} tokens from a codebook of {tokens.codebook_size}; "
            "pass the tokenizer the generator was trained with (--tokenizer)"
        )
    recorded = (generator.token_settings or {}).get("tokenizer_config_sha256")
    if recorded and recorded != settings_sha256(tokens.to_dict()):
        logger.warning(
            "tokenizer %s differs from the one generator %s was trained with (%s); samples may be noise",
            tokenizer_name, generator.name, (generator.token_settings or {}).get("tokenizer", "unknown"),
        )
