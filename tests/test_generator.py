"""LARPGenerator: config, forward pass, loss positions, label dropout, loading and key mapping."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from larp_video.config import ConfigError
from larp_video.models.generator import GeneratorConfig, LARPGenerator, generator_config
from larp_video.models.released_generator import (
    config_from_released,
    config_to_released,
    state_dict_from_released,
    state_dict_to_released,
)

RELEASED_LP_PARAMETERS = 631_975_680


def random_generator(config: GeneratorConfig) -> LARPGenerator:
    """A generator in eval mode whose head is random, so that its logits are not all zero."""
    model = LARPGenerator(config).eval()
    torch.nn.init.normal_(model.head.weight, std=0.3)
    return model


def read_keys(path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in path.read_text().splitlines():
        name, shape, _dtype = line.split("\t")
        shapes[name] = tuple(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]")))
    return shapes


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_config_rejects_unknown_key():
    with pytest.raises(ConfigError, match="num_layer"):
        GeneratorConfig.from_dict({"num_layer": 2})


def test_config_rejects_unknown_mode():
    with pytest.raises(ConfigError, match="mode"):
        GeneratorConfig(mode="unconditional")


def test_config_rejects_indivisible_heads():
    with pytest.raises(ConfigError, match="num_heads"):
        GeneratorConfig(dim=100, num_heads=3)


def test_config_json_round_trip(tmp_path):
    config = GeneratorConfig.tiny(mode="frame_prediction", position_embedding="rope")
    config.save_json(tmp_path / "config.json")
    assert GeneratorConfig.load_json(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    ("size", "layers", "heads", "dim", "ffn"),
    [("B", 12, 12, 768, 2048), ("L", 24, 16, 1024, 2816), ("LP", 30, 20, 1280, 3584)],
)
def test_config_sizes(size, layers, heads, dim, ffn):
    config = generator_config(size)
    assert (config.num_layers, config.num_heads, config.dim) == (layers, heads, dim)
    assert config.ffn_hidden_dim == ffn


def test_config_size_factories_match_function():
    assert GeneratorConfig.LP(num_classes=7) == generator_config("LP", num_classes=7)


def test_config_prefix_and_sequence_length():
    class_config = GeneratorConfig.tiny()
    frame_config = GeneratorConfig.tiny(mode="frame_prediction")
    assert (class_config.prefix_length, class_config.sequence_length) == (1, 16)
    assert (frame_config.prefix_length, frame_config.sequence_length) == (17, 32)


def test_ffn_dim_multiplier_scales_before_rounding():
    config = GeneratorConfig.tiny(ffn_dim_multiplier=1.5)
    assert config.ffn_hidden_dim == 256  # int(1.5 * int(2 * 256 / 3)) = 255, rounded up to 32


# ---------------------------------------------------------------------------------------------
# Released weights
# ---------------------------------------------------------------------------------------------


def test_released_tiny_logits_match_reference(reference_dir):
    model = LARPGenerator.from_pretrained(reference_dir / "ar-tiny").eval()
    expected = load_file(str(reference_dir / "ar-tiny" / "expected.safetensors"))
    # The 16th token is only a target, so its value does not change the logits.
    tokens = torch.cat([expected["token_indices"], torch.zeros(2, 1, dtype=torch.long)], dim=1)

    with torch.no_grad():
        logits = model(tokens, expected["class_labels"]).logits

    assert logits.shape == expected["logits"].shape
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-5)


def test_released_tiny_config_converts(reference_dir):
    released = json.loads((reference_dir / "ar-tiny" / "config.json").read_text())
    config = config_from_released(released)
    assert config == GeneratorConfig.tiny(rope_base=10000.0)


@pytest.mark.parametrize("mode", ["class_conditional", "frame_prediction"])
@pytest.mark.parametrize("position_embedding", ["learned", "sincos"])
def test_released_config_round_trip(mode, position_embedding):
    config = GeneratorConfig.tiny(mode=mode, position_embedding=position_embedding)
    assert config_from_released(config_to_released(config)) == config


def test_released_config_rejects_unknown_key(reference_dir):
    released = json.loads((reference_dir / "ar-tiny" / "config.json").read_text())
    with pytest.raises(ConfigError, match="use_rope"):
        config_from_released({**released, "use_rope": True})


def test_released_config_rejects_grouped_query_attention(reference_dir):
    released = json.loads((reference_dir / "ar-tiny" / "config.json").read_text())
    with pytest.raises(ConfigError, match="n_kv_head"):
        config_from_released({**released, "n_kv_head": 2})


def test_released_config_rejects_wrong_prefix(reference_dir):
    released = json.loads((reference_dir / "ar-tiny" / "config.json").read_text())
    with pytest.raises(ConfigError, match="cls_token_num"):
        config_from_released({**released, "frame_prediction": True})


def test_released_lp_keys_map_both_ways(reference_dir):
    released_shapes = read_keys(reference_dir / "larp-l-long-ar.keys.tsv")
    config = GeneratorConfig.LP()
    with torch.device("meta"):
        model = LARPGenerator(config)
    ours = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    released = {name: torch.empty(shape, device="meta") for name, shape in released_shapes.items()}

    converted = state_dict_from_released(released, config)
    exported = state_dict_to_released(model.state_dict(), config)

    assert {name: tuple(value.shape) for name, value in converted.items()} == ours
    assert {name: tuple(value.shape) for name, value in exported.items()} == released_shapes
    assert sum(parameter.numel() for parameter in model.parameters()) == RELEASED_LP_PARAMETERS


def test_released_state_dict_round_trip():
    config = GeneratorConfig.tiny(mode="frame_prediction")
    state = random_generator(config).state_dict()
    restored = state_dict_from_released(state_dict_to_released(state, config), config)
    assert restored.keys() == state.keys()
    assert all(torch.equal(restored[name], state[name]) for name in state)


def test_released_state_dict_rejects_unknown_key():
    config = GeneratorConfig.tiny()
    with pytest.raises(KeyError, match="freqs_cis"):
        state_dict_from_released({"freqs_cis": torch.zeros(1)}, config)


def test_released_class_table_without_null_row_is_padded():
    config = GeneratorConfig.tiny(class_dropout_prob=0.0)
    released = state_dict_to_released(LARPGenerator(config).state_dict(), config)
    assert released["cls_embedding.embedding_table.weight"].shape[0] == config.num_classes
    converted = state_dict_from_released(released, config)
    assert converted["class_embedding.weight"].shape[0] == config.num_classes + 1


def test_save_pretrained_round_trip(tmp_path):
    model = random_generator(GeneratorConfig.tiny(position_embedding="rope"))
    model.save_pretrained(tmp_path)
    loaded = LARPGenerator.from_pretrained(tmp_path).eval()
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([1, -1])

    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, labels).logits, model(tokens, labels).logits, rtol=0, atol=0)


def test_from_pretrained_applies_overrides(reference_dir):
    model = LARPGenerator.from_pretrained(reference_dir / "ar-tiny", token_dropout=0.0)
    assert model.config.token_dropout == 0.0


# ---------------------------------------------------------------------------------------------
# Initialisation and forward pass
# ---------------------------------------------------------------------------------------------


def test_init_head_is_zero():
    model = LARPGenerator(GeneratorConfig.tiny())
    assert torch.count_nonzero(model.head.weight) == 0


def test_init_weights_have_std_0_02():
    model = LARPGenerator(GeneratorConfig.tiny())
    for weight in (model.token_embedding.weight, model.blocks[0].ffn.gate_proj.weight, model.position_embedding):
        assert abs(weight.std().item() - 0.02) < 0.002


def test_init_norms_are_one():
    model = LARPGenerator(GeneratorConfig.tiny())
    assert torch.equal(model.final_norm.weight, torch.ones(64))


def test_sincos_table_is_not_saved():
    model = LARPGenerator(GeneratorConfig.tiny(position_embedding="sincos"))
    assert "position_embedding" not in model.state_dict()


@pytest.mark.parametrize("position_embedding", ["learned", "sincos", "rope"])
def test_forward_logit_j_sees_only_tokens_before_j(position_embedding):
    model = random_generator(GeneratorConfig.tiny(position_embedding=position_embedding))
    tokens = torch.randint(0, 64, (2, 16))
    changed = tokens.clone()
    changed[:, 5] = (tokens[:, 5] + 1) % 64
    labels = torch.tensor([0, 3])

    with torch.no_grad():
        before = model(tokens, labels).logits
        after = model(changed, labels).logits

    torch.testing.assert_close(after[:, :6], before[:, :6], rtol=0, atol=0)
    assert not torch.allclose(after[:, 6], before[:, 6])


def test_forward_loss_is_cross_entropy_of_all_tokens():
    model = random_generator(GeneratorConfig.tiny())
    tokens = torch.randint(0, 64, (3, 16))
    output = model(tokens, torch.tensor([0, 1, 2]))
    expected = F.cross_entropy(output.logits.flatten(0, 1), tokens.flatten())
    torch.testing.assert_close(output.loss, expected)


def test_forward_accepts_fewer_tokens():
    model = random_generator(GeneratorConfig.tiny())
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([0, 4])
    with torch.no_grad():
        full = model(tokens, labels).logits
        short = model(tokens[:, :7], labels).logits
    torch.testing.assert_close(short, full[:, :7])


def test_forward_rejects_out_of_range_tokens():
    model = LARPGenerator(GeneratorConfig.tiny())
    with pytest.raises(ValueError, match="64"):
        model(torch.full((1, 16), 64), torch.tensor([0]))


def test_forward_rejects_too_many_tokens():
    model = LARPGenerator(GeneratorConfig.tiny())
    with pytest.raises(ValueError, match="1 <= n <= 16"):
        model(torch.zeros(1, 17, dtype=torch.long), torch.tensor([0]))


def test_forward_rejects_out_of_range_label():
    model = LARPGenerator(GeneratorConfig.tiny())
    with pytest.raises(ValueError, match="class label 5"):
        model(torch.zeros(1, 16, dtype=torch.long), torch.tensor([5]))


def test_forward_bf16_autocast_matches_fp32():
    model = random_generator(GeneratorConfig.tiny())
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([2, -1])
    with torch.no_grad():
        reference = model(tokens, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(tokens, labels)
    assert mixed.logits.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.logits.float(), reference.logits, rtol=0.05, atol=0.1)
    assert abs(mixed.loss.item() - reference.loss.item()) < 0.05


def test_optimizer_groups_decay_only_linear_weights():
    model = LARPGenerator(GeneratorConfig.tiny())
    decay, no_decay = model.optimizer_groups(0.05)
    linear_count = 2 * (2 + 3) + 1  # per block qkv, proj and three SwiGLU weights, plus the head
    assert len(decay["params"]) == linear_count
    assert decay["weight_decay"] == 0.05
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_backward_reaches_every_parameter():
    model = LARPGenerator(GeneratorConfig.tiny(drop_path_rate=0.1)).train()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    model(torch.randint(0, 64, (4, 16)), torch.tensor([0, 1, 2, -1])).loss.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert missing == []


# ---------------------------------------------------------------------------------------------
# Frame prediction and class conditioning
# ---------------------------------------------------------------------------------------------


def test_frame_prediction_loss_only_on_targets():
    model = random_generator(GeneratorConfig.tiny(mode="frame_prediction"))
    condition = torch.randint(0, 64, (2, 16))
    tokens = torch.randint(0, 64, (2, 16))

    output = model(tokens, condition)

    assert output.logits.shape == (2, 16, 64)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits.flatten(0, 1), tokens.flatten()))


def test_frame_prediction_logit_j_matches_shorter_input():
    model = random_generator(GeneratorConfig.tiny(mode="frame_prediction"))
    condition = torch.randint(0, 64, (2, 16))
    tokens = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        full = model(tokens, condition).logits
        first = model(tokens[:, :1], condition).logits
    torch.testing.assert_close(first[:, 0], full[:, 0])


def test_frame_prediction_first_logit_depends_on_condition():
    model = random_generator(GeneratorConfig.tiny(mode="frame_prediction"))
    condition = torch.randint(0, 64, (1, 16))
    tokens = torch.randint(0, 64, (1, 16))
    with torch.no_grad():
        before = model(tokens, condition).logits[:, 0]
        after = model(tokens, (condition + 1) % 64).logits[:, 0]
    assert not torch.allclose(before, after)


def test_frame_prediction_has_separator_row():
    model = LARPGenerator(GeneratorConfig.tiny(mode="frame_prediction"))
    assert model.token_embedding.weight.shape == (65, 64)
    assert model.class_embedding is None


def test_frame_prediction_rejects_wrong_condition_shape():
    model = LARPGenerator(GeneratorConfig.tiny(mode="frame_prediction"))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        model(torch.zeros(1, 16, dtype=torch.long), torch.zeros(1, 15, dtype=torch.long))


def test_negative_label_is_null_class():
    model = LARPGenerator(GeneratorConfig.tiny()).eval()
    prefix = model.prefix_embeddings(torch.tensor([-1, -7]))
    null_row = model.class_embedding.weight[5]
    torch.testing.assert_close(prefix[:, 0], null_row.expand(2, -1))


def test_label_dropout_rate_in_training():
    model = LARPGenerator(GeneratorConfig.tiny(class_dropout_prob=0.1)).train()
    with torch.no_grad():
        prefix = model.prefix_embeddings(torch.zeros(20_000, dtype=torch.long))[:, 0]
    dropped = (prefix == model.class_embedding.weight[5]).all(dim=1).float().mean().item()
    assert abs(dropped - 0.1) < 0.01


def test_label_dropout_off_in_eval():
    model = LARPGenerator(GeneratorConfig.tiny(class_dropout_prob=0.5)).eval()
    prefix = model.prefix_embeddings(torch.zeros(1000, dtype=torch.long))[:, 0]
    assert torch.equal(prefix, model.class_embedding.weight[0].expand(1000, -1))
