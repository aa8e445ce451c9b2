"""Conversion of released LARP tokenizer checkpoints into this package's layout.

The released checkpoints (for example hywang66/LARP-L-long-tokenizer on the Hugging Face Hub)
were saved by huggingface_hub's ``PyTorchModelHubMixin``: ``config.json`` holds the reference
constructor's keyword arguments and ``model.safetensors`` its state dict. This module maps both
onto ``TokenizerConfig`` and the parameter names of ``LARPTokenizer``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from larp_video.models.prior import PRIOR_PRESETS, PriorConfig
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig

logger = logging.getLogger(__name__)


class ReleasedCheckpointError(ValueError):
    """A released checkpoint uses an option this package does not implement, or is malformed."""


# (released name pattern, our name template) pairs; each pattern matches a whole name.
_NAME_MAP = [
    (r"x_embedder\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder_patch_pe", r"encoder_pos_embed"),
    (r"encoder_latent_query_embed", r"queries"),
    (r"(encoder|decoder)\.blocks\.(\d+)\.(.+)", r"\1.blocks.\2.\3"),
    (r"bottleneck\.in_linear\.(weight|bias)", r"to_code.\1"),
    (r"bottleneck\.out_linear\.(weight|bias)", r"from_code.\1"),
    (r"bottleneck\.regularizer\.embedding\.weight", r"quantizer.codebook.weight"),
    (r"decoder_latent_pe", r"decoder_latent_pos_embed"),
    (r"decoder_patch_query_embed", r"decoder_patch_pos_embed"),
    (r"decoder_patch_query_token_type_embed", r"patch_query_embed"),
    (r"final_layer\.norm_final\.(weight|bias)", r"head.norm.\1"),
    (r"final_layer\.linear\.(weight|bias)", r"head.linear.\1"),
    (r"prior_model\.pos_emb", r"prior.pos_embed"),
    (r"prior_model\.input_proj\.(weight|bias)", r"prior.input_proj.\1"),
    (r"prior_model\.blocks\.(\d+)\.(ln1|ln2)\.(weight|bias)", r"prior.blocks.\1.\2.\3"),
    (r"prior_model\.blocks\.(\d+)\.attn\.(query|key|value|proj)\.(weight|bias)", r"prior.blocks.\1.attn.\2.\3"),
    (r"prior_model\.blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"prior.blocks.\1.fc1.\2"),
    (r"prior_model\.blocks\.(\d+)\.mlp\.2\.(weight|bias)", r"prior.blocks.\1.fc2.\2"),
    (r"prior_model\.ln_f\.(weight|bias)", r"prior.norm.\1"),
    (r"prior_model\.head\.(weight|bias)", r"prior.head.\1"),
]

# Released constructor options that must have these values: the released models use them, and
# the other values select architecture variants this package does not implement.
_REQUIRED_OPTIONS = {
    "transformer_name": "transformer_encoder_parallel",
    "learned_encoder_patch_pe": False,
    "learned_encoder_latent_query_embed": True,
    "learned_decoder_latent_pe": False,
    "learned_decoder_patch_query_embed": False,
    "use_encoder_patch_token_type_embed": False,
    "use_encoder_latent_query_token_type_embed": False,
    "use_decoder_latent_token_type_embed": False,
    "use_decoder_patch_query_token_type_embed": True,
}


def released_to_ours(name: str) -> str:
    """Map a released parameter name to ours; raise ``ReleasedCheckpointError`` if unknown."""
    for pattern, template in _NAME_MAP:
        if re.fullmatch(pattern, name):
            return re.sub(f"^{pattern}$", template, name)
    raise ReleasedCheckpointError(f"unknown parameter {name!r} in the released tokenizer checkpoint")


def config_from_released(released: dict[str, Any]) -> TokenizerConfig:
    """Translate the reference constructor's arguments into a ``TokenizerConfig``."""
    for key, required in _REQUIRED_OPTIONS.items():
        if key in released and released[key] != required:
            raise ReleasedCheckpointError(
                f"released option {key}={released[key]!r} is not supported (only {required!r}, as in the released models)"
            )
    for key in ("encoder_name", "decoder_name"):
        if str(released.get(key) or "none").lower() not in ("none", "no", "null", ""):
            raise ReleasedCheckpointError(f"released option {key}={released[key]!r} is not supported (only 'none')")
    for key in ("temporal_patch_size", "patch_size"):
        if released.get(f"decoder_{key}", released.get(key)) != released.get(key):
            raise ReleasedCheckpointError(f"decoder_{key} differs from {key}; only equal patch sizes are supported")

    bottleneck = released["bottleneck"]["args"]
    if str(bottleneck.get("norm") or "none").lower() not in ("none", "no"):
        raise ReleasedCheckpointError(f"bottleneck norm {bottleneck['norm']!r} is not supported (only 'none')")
    regularizer = bottleneck["regularizer"]
    vq = regularizer["args"]
    if regularizer["name"] != "vq" or not vq.get("l2_normalized") or not vq.get("stochastic"):
        raise ReleasedCheckpointError(
            "only the stochastic L2-normalised VQ bottleneck of the released models is supported, got "
            f"{regularizer['name']!r} with l2_normalized={vq.get('l2_normalized')}, stochastic={vq.get('stochastic')}"
        )
    if vq.get("entropy_loss_weight", 0.0) != 0.0:
        raise ReleasedCheckpointError("a VQ entropy loss (entropy_loss_weight > 0) is not supported")
    if vq.get("stochastic_temperature", 1.0) <= 0:
        raise ReleasedCheckpointError("a learned quantizer temperature (stochastic_temperature <= 0) is not supported")

    return TokenizerConfig(
        num_frames=released["frame_num"],
        image_size=released["input_size"],
        in_channels=released.get("in_channels", 3),
        temporal_patch_size=released["temporal_patch_size"],
        patch_size=released["patch_size"],
        encoder_width=released["encoder_hidden_size"],
        encoder_depth=released["encoder_depth"],
        encoder_heads=released["encoder_num_heads"],
        decoder_width=released["decoder_hidden_size"],
        decoder_depth=released["decoder_depth"],
        decoder_heads=released["decoder_num_heads"],
        num_tokens=released["bottleneck_token_num"],
        code_dim=bottleneck["bottleneck_dim"],
        codebook_size=vq["codebook_size"],
        quantizer_temperature=vq.get("stochastic_temperature", 0.03),
        codebook_loss_weight=vq.get("codebook_loss_weight", 1.0),
        commitment_loss_weight=vq.get("commitment_loss_weight", 0.25),
        query_init_std=released.get("query_init_std", 0.02),
        latent_pos_base=float(released.get("latent_pe_scale_factor", 10000)),
        prior=_prior_from_released(released.get("prior_model") or {}),
    )


def load_released_tokenizer(
    released_config: dict[str, Any], state_dict: dict[str, torch.Tensor], **overrides: Any
) -> LARPTokenizer:
    """Build a ``LARPTokenizer`` from a released config and state dict."""
    config = config_from_released(released_config)
    if config.prior is not None and "prior_model.pos_emb" in state_dict:
        config = config.replace(prior=config.prior.replace(max_positions=state_dict["prior_model.pos_emb"].shape[1]))
    if overrides:
        config = config.replace(**overrides)

    released_names = {released_to_ours(name): name for name in state_dict}
    converted = {ours: state_dict[released] for ours, released in released_names.items()}
    model = LARPTokenizer(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ReleasedCheckpointError(
            f"released checkpoint does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in converted.items():
        if tensor.shape != expected[name].shape:
            raise ReleasedCheckpointError(
                f"released tensor {released_names[name]} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(expected[name].shape)}"
            )
        converted[name] = tensor.to(expected[name].dtype)
    model.load_state_dict(converted, strict=True)
    return model


def _prior_from_released(prior: dict[str, Any]) -> PriorConfig | None:
    name = str(prior.get("name") or "none")
    if name.lower() in ("none", "no", "null", ""):
        return None
    if name not in PRIOR_PRESETS:
        raise ReleasedCheckpointError(f"unknown released prior size {name!r}; known sizes: {sorted(PRIOR_PRESETS)}")
    if prior.get("no_grad_before_last_round", False):
        raise ReleasedCheckpointError("prior option no_grad_before_last_round=True is not supported")
    if not prior.get("args", {}).get("l2_normalized", True):
        raise ReleasedCheckpointError("a prior without L2-normalised outputs is not supported")
    return PriorConfig.preset(
        name,
        dropout=0.0 if prior.get("no_dropout", False) else 0.1,
        rounds=prior.get("n_rounds", 2),
        scheduled_sampling=prior.get("use_mix_ss", True),
        scheduled_sampling_max_ratio=prior.get("mix_ss_max_ratio", 0.5),
        scheduled_sampling_peak_fraction=prior.get("mix_ss_peak_steps_ratio", 0.3),
        logit_temperature=prior.get("latent_ce_temperature", 1.0),
        average_rounds=prior.get("avg_loss_over_rounds", True),
    )
