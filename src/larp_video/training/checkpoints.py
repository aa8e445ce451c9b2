"""Reading tokenizers out of Lightning training checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from larp_video.models.hub import strip_state_dict_prefixes
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig


def tokenizer_from_lightning_checkpoint(path: str | os.PathLike, *, use_ema: bool = True) -> LARPTokenizer:
    """Build the tokenizer saved in a ``larp train tokenizer`` checkpoint.

    With ``use_ema`` the EMA weights are used when the checkpoint has them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "tokenizer_config" not in checkpoint:
        raise ValueError(f"{path} is not a tokenizer training checkpoint (it has no 'tokenizer_config')")
    config = TokenizerConfig.from_dict(checkpoint["tokenizer_config"])

    state = checkpoint.get("ema_state_dict") if use_ema else None
    if state is None:
        prefix = "tokenizer."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model = LARPTokenizer(config)
    model.load_state_dict(strip_state_dict_prefixes(state), strict=True)
    return model
