"""Reading tokenizers out of Lightning training checkpoints."""

from __future__ import annotations

import logging
import os

from larp_video.models.hub import load_checkpoint_file, strip_state_dict_prefixes
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig

logger = logging.getLogger(__name__)


def tokenizer_from_lightning_checkpoint(path: str | os.PathLike, *, use_ema: bool = True) -> LARPTokenizer:
    """Build the tokenizer saved in a ``larp train tokenizer`` checkpoint.

    With ``use_ema`` the EMA weights are used when the checkpoint has them.
    """
    checkpoint = load_checkpoint_file(path, "tokenizer_config", "tokenizer")
    config = TokenizerConfig.from_dict(checkpoint["tokenizer_config"])

    state = checkpoint.get("ema_state_dict") if use_ema else None
    if use_ema and state is None:
        logger.warning("%s has no EMA weights (trained with ema_decay=null); using the trained weights", path)
    if state is None:
        prefix = "tokenizer."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model = LARPTokenizer(config)
    model.load_state_dict(strip_state_dict_prefixes(state), strict=True)
    return model
