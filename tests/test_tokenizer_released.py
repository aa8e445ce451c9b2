"""The tokenizer loads released LARP checkpoints and reproduces the reference outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from larp_video.models.released import ReleasedCheckpointError, config_from_released, released_to_ours
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def released_tiny(request):
    directory = request.config.rootpath / "tests" / "fixtures" / "reference" / "tokenizer-tiny"
    model = LARPTokenizer.from_pretrained(directory).eval()
    expected = load_file(str(directory / "expected.safetensors"))
    return model, expected


@pytest.fixture(scope="module")
def reference_outputs(released_tiny):
    model, expected = released_tiny
    video = expected["input_video"]
    with torch.no_grad():
        hidden = model.encode_hidden(video)
        encoded = model.encode(video)
        codebook = model.quantizer.unit_codebook()
        return {
            "encoder_output": hidden,
            "token_indices": encoded.indices,
            "quantized_unit_vectors": encoded.codes,
            "decoder_input": model.from_code(encoded.codes),
            "reconstruction": model.decode_codes(encoded.codes),
            "prior_prediction": model.prior.predict(encoded.codes),
            "prior_logits": model.prior.logits(encoded.codes, codebook),
        }


@pytest.mark.parametrize(
    "name",
    [
        "encoder_output",
        "quantized_unit_vectors",
        "decoder_input",
        "reconstruction",
        "prior_prediction",
        "prior_logits",
    ],
)
def test_released_tiny_tensor_matches(name, released_tiny, reference_outputs):
    _, expected = released_tiny
    ours = reference_outputs[name]
    assert ours.shape == expected[name].shape
    assert (ours - expected[name]).abs().max().item() < TOLERANCE


def test_released_tiny_indices_match(released_tiny, reference_outputs):
    _, expected = released_tiny
    assert reference_outputs["token_indices"].dtype == torch.int64
    assert torch.equal(reference_outputs["token_indices"], expected["token_indices"])


def test_released_tiny_decode_from_indices(released_tiny):
    model, expected = released_tiny
    with torch.no_grad():
        video = model.decode(expected["token_indices"])
    assert (video - expected["reconstruction"]).abs().max().item() < TOLERANCE


def test_released_config_maps_to_preset_l(reference_dir):
    released = json.loads((reference_dir / "larp-l-tokenizer.config.json").read_text())
    assert config_from_released(released) == TokenizerConfig.preset("L")


def test_l_config_maps_every_released_key(reference_dir):
    rows = [line.split("\t") for line in (reference_dir / "larp-l-tokenizer.keys.tsv").read_text().splitlines()]
    released = {name: tuple(int(n) for n in shape.strip("()").split(",") if n.strip()) for name, shape, _ in rows}
    with torch.device("meta"):
        model = LARPTokenizer(TokenizerConfig.preset("L"))
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}

    mapped = {released_to_ours(name): shape for name, shape in released.items()}
    assert sorted(set(ours) - set(mapped)) == []
    assert sorted(set(mapped) - set(ours)) == []
    assert {name: shape for name, shape in mapped.items() if ours[name] != shape} == {}


def test_l_parameter_counts():
    with torch.device("meta"):
        model = LARPTokenizer(TokenizerConfig.preset("L"))
    assert model.num_parameters() == 193_880_224
    assert model.num_parameters() - model.num_parameters(include_prior=False) == 21_700_240


def test_released_unsupported_option_rejected(reference_dir):
    released = json.loads((reference_dir / "larp-l-tokenizer.config.json").read_text())
    released["learned_encoder_patch_pe"] = True
    with pytest.raises(ReleasedCheckpointError, match="learned_encoder_patch_pe"):
        config_from_released(released)


def test_released_unknown_parameter_rejected():
    with pytest.raises(ReleasedCheckpointError, match="unknown parameter"):
        released_to_ours("encoder.extra_norm.weight")


def test_prefixed_state_dict_loads(tmp_path, reference_dir):
    source = reference_dir / "tokenizer-tiny"
    state = load_file(str(source / "model.safetensors"))
    save_file({f"module._orig_mod.{k}": v for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    model = LARPTokenizer.from_pretrained(tmp_path)
    assert torch.equal(model.queries, state["encoder_latent_query_embed"])
