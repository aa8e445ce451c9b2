"""Device and numeric-precision choices shared by the command line and the pipelines."""

from __future__ import annotations

import contextlib
import logging

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device``, or CUDA when available and the CPU otherwise."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"invalid device {str(device)!r}; use cpu, cuda or cuda:N") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was requested but no CUDA GPU is available; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} was requested but this PyTorch build has no usable MPS; use --device cpu")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Return the autocast context for ``precision`` ("fp32" runs without autocast).

    bf16 is the only reduced precision offered: on CPUs fp16 matmuls are far slower than fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def cast_for_inference(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Cast an inference model's weights for ``precision``.

    "bf16" stores the weights in bfloat16, which is faster than autocast because no weight is
    cast per call; the tokenizer's quantizer still computes in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return model.to(torch.bfloat16) if precision == "bf16" else model
