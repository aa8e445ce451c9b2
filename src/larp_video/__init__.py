"""LARP video tokenizer and autoregressive video generator.

The main classes and functions are importable from the package root; they are loaded on first
use, so ``import larp_video`` stays fast.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "LARPTokenizer": "larp_video.models.tokenizer",
    "TokenizerConfig": "larp_video.models.tokenizer",
    "LARPGenerator": "larp_video.models.generator",
    "GeneratorConfig": "larp_video.models.generator_config",
    "tokenize_video": "larp_video.video_tokens",
    "decode_video": "larp_video.video_tokens",
    "TokenizedVideo": "larp_video.video_tokens",
    "reconstruct_video": "larp_video.reconstruct",
    "read_video": "larp_video.data.video_io",
    "write_video": "larp_video.data.video_io",
    "probe_video": "larp_video.data.video_io",
    "load_tokenizer": "larp_video.pretrained",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'larp_video' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
