"""Conversion between the released LARP generator checkpoints and ``LARPGenerator``.

The released repositories (hywang66/LARP-L-long-AR and hywang66/LARP-L-long-AR-FP) store the
reference implementation's model-arguments dataclass as ``config.json`` and its state dict as
``model.safetensors``. This module maps that config onto ``GeneratorConfig`` and the parameter
names both ways:

    released                                  ours
    tok_embeddings.weight                     token_embedding.weight
    cls_embedding.embedding_table.weight      class_embedding.weight
    abs_pe (1, rows, D)                       position_embedding (rows, D)
    layers.{i}.attention_norm.weight          blocks.{i}.attention_norm.weight
    layers.{i}.attention.wqkv.weight          blocks.{i}.attention.qkv.weight
    layers.{i}.attention.wo.weight            blocks.{i}.attention.proj.weight
    layers.{i}.ffn_norm.weight                blocks.{i}.ffn_norm.weight
    layers.{i}.feed_forward.w1.weight         blocks.{i}.ffn.gate_proj.weight
    layers.{i}.feed_forward.w3.weight         blocks.{i}.ffn.up_proj.weight
    layers.{i}.feed_forward.w2.weight         blocks.{i}.ffn.down_proj.weight
    norm.weight                               final_norm.weight
    output.weight                             head.weight
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from larp_video.config import ConfigError
from larp_video.models.generator_config import GeneratorConfig
from larp_video.models.layers import sincos_1d

logger = logging.getLogger(__name__)

# Fields of the reference implementation's model-arguments dataclass (ModelArgs) and their
# defaults there, used for configs that omit keys.
RELEASED_DEFAULTS: dict[str, Any] = {
    "dim": 4096, "n_layer": 32, "n_head": 32, "n_kv_head": None, "multiple_of": 256, "ffn_dim_multiplier": None,
    "rope_base": 10000, "norm_eps": 1e-5, "initializer_range": 0.02, "token_dropout_p": 0.1,
    "attn_dropout_p": 0.0, "resid_dropout_p": 0.1, "ffn_dropout_p": 0.1, "drop_path_rate": 0.0,
    "num_classes": 101, "class_dropout_prob": 0.1, "model_type": "class_cond", "vocab_size": 8192,
    "cls_token_num": 1, "max_batch_size": 32, "max_seq_len": 1024, "use_fixed_pe": False,
    "frame_prediction": False,
}
RELEASED_CONFIG_KEYS = frozenset(RELEASED_DEFAULTS)

# Released config key -> GeneratorConfig field, for the keys that carry over unchanged.
_RENAMED_CONFIG_KEYS = {
    "dim": "dim",
    "n_layer": "num_layers",
    "n_head": "num_heads",
    "multiple_of": "multiple_of",
    "ffn_dim_multiplier": "ffn_dim_multiplier",
    "rope_base": "rope_base",
    "norm_eps": "norm_eps",
    "initializer_range": "initializer_range",
    "token_dropout_p": "token_dropout",
    "attn_dropout_p": "attention_dropout",
    "resid_dropout_p": "residual_dropout",
    "ffn_dropout_p": "ffn_dropout",
    "drop_path_rate": "drop_path_rate",
    "num_classes": "num_classes",
    "class_dropout_prob": "class_dropout_prob",
    "vocab_size": "vocab_size",
    "max_seq_len": "num_tokens",
}

_TOP_LEVEL_NAMES = {
    "tok_embeddings.weight": "token_embedding.weight",
    "cls_embedding.embedding_table.weight": "class_embedding.weight",
    "abs_pe": "position_embedding",
    "norm.weight": "final_norm.weight",
    "output.weight": "head.weight",
}
_BLOCK_NAMES = {
    "attention_norm.weight": "attention_norm.weight",
    "attention.wqkv.weight": "attention.qkv.weight",
    "attention.wo.weight": "attention.proj.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "feed_forward.w1.weight": "ffn.gate_proj.weight",
    "feed_forward.w3.weight": "ffn.up_proj.weight",
    "feed_forward.w2.weight": "ffn.down_proj.weight",
}
_RELEASED_BLOCK = re.compile(r"layers\.(\d+)\.(.+)")
_OUR_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def config_from_released(released: dict[str, Any]) -> GeneratorConfig:
    """Build the ``GeneratorConfig`` of a released ``config.json``; unsupported settings raise."""
    unknown = sorted(set(released) - RELEASED_CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"released generator config has unknown key(s) {unknown}; this converter reads the reference "
            f"implementation's ModelArgs fields {sorted(RELEASED_CONFIG_KEYS)}"
        )
    values = {**RELEASED_DEFAULTS, **released}

    frame_prediction = bool(values["frame_prediction"])
    if not frame_prediction and values["model_type"] != "class_cond":
        raise ConfigError(f"released model_type {values['model_type']!r} is not supported; only 'class_cond' is")
    kv_heads = values["n_kv_head"]
    if kv_heads is not None and kv_heads != values["n_head"]:
        raise ConfigError(
            f"released n_kv_head {kv_heads} differs from n_head {values['n_head']}: grouped-query attention "
            "is not supported; only n_kv_head null or equal to n_head is"
        )
    expected_prefix = values["max_seq_len"] + 1 if frame_prediction else 1
    if values["cls_token_num"] != expected_prefix:
        raise ConfigError(
            f"released cls_token_num {values['cls_token_num']} is not supported for "
            f"{'frame prediction' if frame_prediction else 'a class-conditional model'}; "
            f"it must be {expected_prefix} (max_seq_len {values['max_seq_len']})"
        )

    ours = {field: values[key] for key, field in _RENAMED_CONFIG_KEYS.items()}
    ours["rope_base"] = float(values["rope_base"])
    ours["mode"] = "frame_prediction" if frame_prediction else "class_conditional"
    ours["position_embedding"] = "sincos" if values["use_fixed_pe"] else "learned"
    return GeneratorConfig.from_dict(ours)


def config_to_released(config: GeneratorConfig) -> dict[str, Any]:
    """Return the released ``config.json`` content that describes ``config``."""
    if config.position_embedding == "rope":
        raise ConfigError("the reference implementation has no RoPE option; only learned or sincos positions export")
    released = {key: getattr(config, field) for key, field in _RENAMED_CONFIG_KEYS.items()}
    released.update(
        n_kv_head=None,
        model_type="class_cond",
        cls_token_num=config.prefix_length,
        max_batch_size=RELEASED_DEFAULTS["max_batch_size"],
        use_fixed_pe=config.position_embedding == "sincos",
        frame_prediction=config.frame_prediction,
    )
    return released


def state_dict_from_released(state_dict: dict[str, torch.Tensor], config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """Rename and reshape a released state dict into ``LARPGenerator``'s layout."""
    converted = {}
    for name, value in state_dict.items():
        ours = _our_name(name)
        if ours is None:
            raise KeyError(f"released generator state dict has unexpected key {name!r}; it cannot be converted")
        if ours == "position_embedding":
            value = value.reshape(value.shape[-2], value.shape[-1])  # (1, rows, D) -> (rows, D)
            if config.position_embedding == "sincos":
                _check_sincos_table(value, config)
                continue  # ours is a fixed buffer computed at construction
        if ours == "class_embedding.weight" and value.shape[0] == config.num_classes:
            # With class_dropout_prob 0 the reference builds no null-class row; ours always has one.
            logger.warning("released class table has no null-class row; adding a zero row, so guidance is untrained")
            value = torch.cat([value, value.new_zeros(1, value.shape[1])])
        converted[ours] = value
    return converted


def state_dict_to_released(state_dict: dict[str, torch.Tensor], config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """Rename and reshape a ``LARPGenerator`` state dict into the released layout."""
    released = {}
    for name, value in state_dict.items():
        theirs = _released_name(name)
        if theirs is None:
            raise KeyError(f"generator state dict has unexpected key {name!r}; it has no released counterpart")
        if theirs == "abs_pe":
            value = value.reshape(1, *value.shape)  # (rows, D) -> (1, rows, D)
        if theirs == "cls_embedding.embedding_table.weight" and config.class_dropout_prob == 0:
            value = value[: config.num_classes]  # the reference has no null-class row without label dropout
        released[theirs] = value
    if config.position_embedding == "sincos":
        # The reference stores its fixed table as a buffer in the state dict.
        released["abs_pe"] = sincos_1d(config.dim, torch.arange(config.sequence_length))[None]
    return released


def load_released_generator(released_config: dict[str, Any], state_dict: dict[str, torch.Tensor], **overrides: Any):
    """Build a ``LARPGenerator`` from a released config and state dict.

    ``overrides`` replace config fields that do not change the weights' shapes (dropouts, for
    example). Missing or unexpected weights raise.
    """
    from larp_video.models.generator import LARPGenerator

    config = config_from_released(released_config)
    if overrides:
        config = config.replace(**overrides)
    model = LARPGenerator(config)
    converted = state_dict_from_released(state_dict, config)
    own = model.state_dict()
    converted = {
        name: value.to(own[name].dtype) if name in own and value.is_floating_point() else value
        for name, value in converted.items()
    }
    model.load_state_dict(converted, strict=True)
    return model


def _our_name(released: str) -> str | None:
    if released in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[released]
    match = _RELEASED_BLOCK.fullmatch(released)
    if match and match.group(2) in _BLOCK_NAMES:
        return f"blocks.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}"
    return None


def _released_name(ours: str) -> str | None:
    for theirs, name in _TOP_LEVEL_NAMES.items():
        if name == ours:
            return theirs
    match = _OUR_BLOCK.fullmatch(ours)
    if match:
        for theirs, name in _BLOCK_NAMES.items():
            if name == match.group(2):
                return f"layers.{match.group(1)}.{theirs}"
    return None


def _check_sincos_table(table: torch.Tensor, config: GeneratorConfig) -> None:
    if table.is_meta:
        return
    expected = sincos_1d(config.dim, torch.arange(config.sequence_length))
    if table.shape != expected.shape or not torch.allclose(table.float().cpu(), expected, atol=1e-5):
        logger.warning("released fixed position table differs from ours; the model uses its own sin-cos table")
