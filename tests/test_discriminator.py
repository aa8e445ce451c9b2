"""Tests of the transformer video discriminator on tiny configs (and the reference size on meta)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from larp_video.config import ConfigError
from larp_video.models.discriminator import DiscriminatorConfig, VideoDiscriminator
from larp_video.models.layers import sincos_3d

# Reference size, counted by hand from the reference's construction (Conv3d patch embedding with
# bias, class token, 12 timm ViT blocks without qkv bias, LayerNorm and Linear -> 1):
#   patch embedding  3 * 4 * 8 * 8 * 512 + 512                        =    393,728
#   class token      512                                               =        512
#   one block        2 * 1024 (norms) + 512 * 1536 (qkv)
#                    + 512 * 512 + 512 (proj) + 512 * 2048 + 2048 (fc1)
#                    + 2048 * 512 + 512 (fc2)                          =  3,150,848
#   12 blocks                                                          = 37,810,176
#   final LayerNorm 1024 + head 513                                    =      1,537
REFERENCE_PARAMETER_COUNT = 38_205_953


def _tiny_video(batch: int = 2) -> torch.Tensor:
    config = DiscriminatorConfig.tiny()
    return torch.rand(batch, 3, config.num_frames, config.image_size, config.image_size)


def test_forward_output_shape():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())

    logits = model(_tiny_video(batch=3))

    assert logits.shape == (3,)


def test_reference_config_sizes():
    config = DiscriminatorConfig.reference()

    assert (config.dim, config.depth, config.num_heads) == (512, 12, 8)
    assert (config.temporal_patch_size, config.patch_size) == (4, 8)
    assert config.grid_size == (4, 16, 16)
    assert config.num_patches == 1024


def test_reference_parameter_count_on_meta():
    with torch.device("meta"):
        model = VideoDiscriminator(DiscriminatorConfig.reference())

    count = sum(parameter.numel() for parameter in model.parameters())

    assert count == REFERENCE_PARAMETER_COUNT


def test_gradients_reach_every_parameter():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())

    model(_tiny_video()).sum().backward()

    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradients_reach_input_video():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())
    video = _tiny_video().requires_grad_(True)

    model(video).sum().backward()

    assert video.grad is not None
    assert video.grad.abs().sum() > 0


def test_bf16_autocast_gives_finite_logits():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())

    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(_tiny_video())

    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()


def test_logits_do_not_depend_on_batch():
    model = VideoDiscriminator(DiscriminatorConfig.tiny()).eval()
    video = _tiny_video(batch=3)

    together = model(video)
    alone = model(video[1:2])

    torch.testing.assert_close(alone, together[1:2], rtol=1e-5, atol=1e-5)


def test_values_outside_unit_range_accepted():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())
    video = _tiny_video() * 1.4 - 0.2  # unclamped decoder outputs overshoot [0, 1]

    logits = model(video)

    assert torch.isfinite(logits).all()


def test_init_linear_biases_zero():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0, name
    assert torch.count_nonzero(model.patch_embed.bias) == 0


def test_init_layernorms_identity():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())

    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.count_nonzero(module.bias) == 0, name


def test_init_xavier_bounds():
    config = DiscriminatorConfig.tiny()
    model = VideoDiscriminator(config)
    patch_fan_in = config.in_channels * config.temporal_patch_size * config.patch_size**2

    patch_bound = math.sqrt(6.0 / (patch_fan_in + config.dim))
    cls_bound = math.sqrt(3.0 / config.dim)  # Xavier on (1, 1, D): fan_in = fan_out = D
    head_bound = math.sqrt(6.0 / (config.dim + 1))

    assert model.patch_embed.weight.abs().max() <= patch_bound
    assert model.patch_embed.weight.abs().max() > 0.5 * patch_bound
    assert model.cls_token.abs().max() <= cls_bound
    assert model.cls_token.abs().max() > 0.5 * cls_bound
    assert model.head.weight.abs().max() <= head_bound


def test_norm_eps_matches_reference():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())

    assert model.norm.eps == 1e-6
    assert model.blocks[0].norm1.eps == 1e-6


def test_position_table_fixed_and_not_saved():
    config = DiscriminatorConfig.tiny()
    model = VideoDiscriminator(config)
    grid_t, grid_side, _ = config.grid_size

    assert torch.equal(model.pos_embed[0], sincos_3d(config.dim, grid_side, grid_t))
    assert "pos_embed" not in model.state_dict()
    assert all(parameter is not model.pos_embed for parameter in model.parameters())


def test_state_dict_round_trip():
    config = DiscriminatorConfig.tiny()
    source = VideoDiscriminator(config).eval()
    target = VideoDiscriminator(config).eval()
    video = _tiny_video()

    target.load_state_dict(source.state_dict())

    torch.testing.assert_close(target(video), source(video))


def test_wrong_shape_raises():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())
    video = torch.rand(2, 3, 4, 32, 32)

    with pytest.raises(ValueError, match=r"\(B, 3, 8, 32, 32\)"):
        model(video)


def test_integer_video_raises():
    model = VideoDiscriminator(DiscriminatorConfig.tiny())
    video = torch.zeros(2, 3, 8, 32, 32, dtype=torch.uint8)

    with pytest.raises(ValueError, match="float"):
        model(video)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_frames": 6}, "temporal_patch_size"),
        ({"image_size": 36}, "patch_size"),
        ({"dim": 30, "num_heads": 3}, "multiple of 4"),
        ({"num_heads": 3}, "num_heads"),
    ],
)
def test_config_rejects_invalid_sizes(changes, message):
    with pytest.raises(ValueError, match=message):
        DiscriminatorConfig.tiny().replace(**changes)


def test_config_json_round_trip(tmp_path):
    config = DiscriminatorConfig.tiny()
    path = tmp_path / "discriminator.json"

    config.save_json(path)

    assert DiscriminatorConfig.load_json(path) == config


def test_config_rejects_unknown_key():
    with pytest.raises(ConfigError, match="hidden_size"):
        DiscriminatorConfig.from_dict({"hidden_size": 512})
