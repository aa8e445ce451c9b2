"""Behaviour of the tokenizer, its quantizer and its prior on tiny configs."""

from __future__ import annotations

import pytest
import torch

from larp_video.config import ConfigError
from larp_video.models.prior import scheduled_sampling_ratio
from larp_video.models.quantizer import StochasticVectorQuantizer, codebook_entropy_loss
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig


@pytest.fixture
def tiny_model():
    model = LARPTokenizer(TokenizerConfig.preset("tiny"))
    torch.nn.init.normal_(model.head.linear.weight, std=0.02)  # a zero head reconstructs a constant
    return model


def random_video(batch=2, config=None):
    config = config or TokenizerConfig.preset("tiny")
    return torch.rand(batch, 3, config.num_frames, config.image_size, config.image_size)


def test_config_rejects_unknown_key():
    with pytest.raises(ConfigError, match="num_frame"):
        TokenizerConfig.from_dict({"num_frame": 16})


def test_config_rejects_indivisible_frames():
    with pytest.raises(ValueError, match="temporal_patch_size"):
        TokenizerConfig(num_frames=10)


def test_config_json_round_trip(tmp_path):
    config = TokenizerConfig.preset("tiny")
    config.save_json(tmp_path / "c.json")
    assert TokenizerConfig.load_json(tmp_path / "c.json") == config


def test_preset_sizes():
    assert TokenizerConfig.preset("S").encoder_width == 512
    assert TokenizerConfig.preset("B").encoder_depth == 8
    assert TokenizerConfig.preset("L").decoder_heads == 12


def test_forward_output_shapes(tiny_model):
    tiny_model.train()
    video = random_video()
    output = tiny_model(video, step=0, total_steps=100)
    assert output.reconstruction.shape == video.shape
    assert output.indices.shape == (2, 16)
    assert output.indices.dtype == torch.int64
    assert int(output.code_counts.sum()) == 2 * 16


def test_forward_losses_finite(tiny_model):
    output = tiny_model.train()(random_video(), step=5, total_steps=100)
    for name in ("vq_loss", "codebook_loss", "commitment_loss", "prior_loss"):
        assert torch.isfinite(getattr(output, name)), name
    assert 0.0 <= float(output.prior_top1_accuracy) <= float(output.prior_top5_accuracy) <= 1.0
    assert 0.0 < float(output.codebook_usage) <= 1.0


def test_forward_requires_total_steps_for_prior(tiny_model):
    with pytest.raises(ValueError, match="total_steps"):
        tiny_model.train()(random_video())


def test_prior_gradient_reaches_encoder(tiny_model):
    tiny_model.train()
    output = tiny_model(random_video(), step=0, total_steps=10)
    output.prior_loss.backward()
    assert tiny_model.queries.grad is not None
    assert tiny_model.queries.grad.abs().sum() > 0
    assert tiny_model.quantizer.codebook.weight.grad is None


def test_reconstruction_gradient_reaches_encoder(tiny_model):
    output = tiny_model.train()(random_video(), step=0, total_steps=10, compute_prior=False)
    output.reconstruction.square().mean().backward()
    assert tiny_model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_encode_deterministic_in_eval(tiny_model):
    tiny_model.eval()
    video = random_video()
    with torch.no_grad():
        first = tiny_model.encode(video).indices
        second = tiny_model.encode(video).indices
    assert torch.equal(first, second)


def test_tokens_independent_of_batch(tiny_model):
    tiny_model.eval()
    video = random_video(batch=4)
    with torch.no_grad():
        batched = tiny_model.encode(video).indices
        single = torch.cat([tiny_model.encode(video[i : i + 1]).indices for i in range(4)])
    assert torch.equal(batched, single)


def test_decode_matches_decode_codes(tiny_model):
    tiny_model.eval()
    with torch.no_grad():
        encoded = tiny_model.encode(random_video())
        assert torch.allclose(tiny_model.decode(encoded.indices), tiny_model.decode_codes(encoded.codes), atol=1e-6)


def test_decode_rejects_out_of_range_indices(tiny_model):
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        tiny_model.decode(torch.full((1, 16), 64))


@pytest.mark.parametrize(
    "video, message",
    [
        (torch.zeros(1, 3, 8, 32, 32, dtype=torch.uint8), "divide uint8"),
        (torch.zeros(1, 3, 16, 32, 32), "tokenize_video"),
        (torch.full((1, 3, 8, 32, 32), -1.0), r"\(video \+ 1\) / 2"),
    ],
)
def test_encode_rejects_bad_input(tiny_model, video, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.encode(video)


def test_patch_embed_equals_conv3d(tiny_model):
    video = random_video()
    embed = tiny_model.patch_embed
    reference = embed.proj(video).flatten(2).transpose(1, 2)
    assert torch.allclose(embed(video), reference, atol=1e-5)


def test_unpatchify_inverts_patch_layout(tiny_model):
    config = tiny_model.config
    video = random_video(batch=1)
    pt, p = config.temporal_patch_size, config.patch_size
    t, h, w = config.grid
    patches = video.reshape(1, 3, t, pt, h, p, w, p).permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(1, t * h * w, -1)
    assert torch.equal(tiny_model.unpatchify(patches), video)


def test_new_model_reconstructs_constant():
    model = LARPTokenizer(TokenizerConfig.preset("tiny")).eval()
    with torch.no_grad():
        video = model.decode_codes(model.encode(random_video()).codes)
    assert video.abs().max() == 0


def test_save_and_load_round_trip(tmp_path, tiny_model):
    tiny_model.eval()
    tiny_model.save_pretrained(tmp_path)
    loaded = LARPTokenizer.from_pretrained(tmp_path).eval()
    video = random_video()
    with torch.no_grad():
        assert torch.equal(tiny_model.decode_codes(tiny_model.encode(video).codes), loaded.decode_codes(loaded.encode(video).codes))


def test_save_half_precision_loads_as_float32(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = LARPTokenizer.from_pretrained(tmp_path)
    assert loaded.queries.dtype == torch.float32


def test_from_pretrained_missing_directory_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        LARPTokenizer.from_pretrained(tmp_path)


def test_bf16_autocast_keeps_quantizer_float32(tiny_model):
    tiny_model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoded = tiny_model.encode(random_video())
        video = tiny_model.decode_codes(encoded.codes)
    assert encoded.codes.dtype == torch.float32
    assert torch.isfinite(video).all()


# ----------------------------------------------------------------------------------------------
# Quantizer
# ----------------------------------------------------------------------------------------------


def test_quantizer_outputs_unit_vectors():
    quantizer = StochasticVectorQuantizer(32, 4)
    out = quantizer(torch.randn(2, 5, 4))
    assert torch.allclose(out.quantized.norm(dim=-1), torch.ones(2, 5), atol=1e-5)


def test_quantizer_argmax_is_nearest_cosine():
    quantizer = StochasticVectorQuantizer(32, 4)
    z = torch.randn(3, 7, 4)
    out = quantizer(z)
    cosines = torch.nn.functional.normalize(z, dim=-1) @ quantizer.unit_codebook().t()
    assert torch.equal(out.indices, cosines.argmax(-1))


def test_quantizer_straight_through_gradient():
    quantizer = StochasticVectorQuantizer(32, 4)
    z = torch.randn(1, 3, 4, requires_grad=True)
    out = quantizer(z)
    out.quantized.sum().backward()
    normalised = z.detach() / z.detach().norm(dim=-1, keepdim=True)
    expected, = torch.autograd.grad(torch.nn.functional.normalize(z, dim=-1).sum(), z)
    assert torch.allclose(z.grad, expected, atol=1e-6)
    assert normalised.shape == z.shape


def test_quantizer_loss_weights():
    quantizer = StochasticVectorQuantizer(32, 4, codebook_loss_weight=1.0, commitment_loss_weight=0.25)
    out = quantizer(torch.randn(2, 5, 4))
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment_loss)
    assert torch.allclose(out.codebook_loss, out.commitment_loss)


def test_quantizer_sampling_follows_softmax():
    quantizer = StochasticVectorQuantizer(4, 2, temperature=0.5)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    z = torch.tensor([[[1.0, 0.2]]]).expand(1, 20000, 2)
    generator = torch.Generator().manual_seed(0)
    indices = quantizer(z, sample=True, generator=generator).indices.flatten()
    observed = torch.bincount(indices, minlength=4).float() / indices.numel()
    cosines = torch.nn.functional.normalize(z[0, :1], dim=-1) @ quantizer.unit_codebook().t()
    expected = torch.softmax(cosines / 0.5, dim=-1).flatten()
    assert (observed - expected).abs().max() < 0.015


def test_quantizer_float32_under_autocast():
    quantizer = StochasticVectorQuantizer(16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(torch.randn(1, 3, 4, dtype=torch.bfloat16))
    assert out.quantized.dtype == torch.float32


def test_entropy_loss_matches_float64_formula():
    similarity = torch.randn(6, 5)
    loss = codebook_entropy_loss(similarity, temperature=0.5)
    p = torch.softmax(similarity.double() / 0.5, dim=-1)
    token_entropy = -(p * p.log()).sum(-1).mean()
    mean = p.mean(0)
    expected = token_entropy + (mean * mean.log()).sum()
    assert abs(float(loss) - float(expected)) < 1e-5


def test_entropy_loss_prefers_spread_codes():
    confident_same = torch.tensor([[10.0, 0.0, 0.0, 0.0]] * 4)
    confident_spread = torch.eye(4) * 10.0
    assert codebook_entropy_loss(confident_spread, 1.0) < codebook_entropy_loss(confident_same, 1.0)


def test_entropy_loss_weight():
    z = torch.randn(2, 5, 4)
    torch.manual_seed(0)
    plain = StochasticVectorQuantizer(32, 4)
    assert float(plain(z).entropy_loss) == 0.0
    torch.manual_seed(0)
    with_entropy = StochasticVectorQuantizer(32, 4, entropy_loss_weight=0.5, entropy_temperature=0.1)
    out = with_entropy(z)
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment_loss + 0.5 * out.entropy_loss)
    assert out.entropy_loss != 0


def distinct_codes_after_training(entropy_loss_weight: float) -> tuple[int, int]:
    """Train 64 near-identical latents and a codebook for 100 steps; codes in use before and after."""
    torch.manual_seed(0)
    latents = torch.nn.Parameter(torch.randn(1, 64, 8) * 0.01 + torch.ones(8))  # all point the same way
    quantizer = StochasticVectorQuantizer(64, 8, entropy_loss_weight=entropy_loss_weight, entropy_temperature=0.1)
    before = quantizer(latents).indices.unique().numel()
    optimizer = torch.optim.Adam([latents, *quantizer.parameters()], lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        quantizer(latents).loss.backward()
        optimizer.step()
    return before, quantizer(latents).indices.unique().numel()


def test_entropy_loss_spreads_codes_of_identical_latents():
    assert distinct_codes_after_training(0.0) == (1, 1)
    before, after = distinct_codes_after_training(1.0)
    assert before == 1
    assert after >= 12


# ----------------------------------------------------------------------------------------------
# Prior
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (15, 0.25), (30, 0.5), (31, 0.5), (100, 0.5)],
)
def test_scheduled_sampling_ramp(step, expected):
    assert scheduled_sampling_ratio(step, 100, max_ratio=0.5, peak_fraction=0.3) == pytest.approx(expected)


def test_prior_ratio_follows_step(tiny_model):
    tiny_model.train()
    early = tiny_model(random_video(), step=0, total_steps=100)
    late = tiny_model(random_video(), step=60, total_steps=100)
    assert early.scheduled_sampling_ratio == 0.0
    assert late.scheduled_sampling_ratio == pytest.approx(0.5)


def test_prior_ratio_zero_repeats_teacher_forcing(tiny_model):
    prior = tiny_model.prior.eval()
    codes = torch.nn.functional.normalize(torch.randn(2, 16, 16), dim=-1)
    indices = torch.randint(0, 64, (2, 16))
    codebook = tiny_model.quantizer.unit_codebook()
    out = prior.loss(codes, indices, codebook, sampling_ratio=0.0)
    assert torch.allclose(out.logits[0], out.logits[1])


def test_prior_ratio_one_changes_second_round(tiny_model):
    prior = tiny_model.prior.eval()
    codes = torch.nn.functional.normalize(torch.randn(2, 16, 16), dim=-1)
    indices = torch.randint(0, 64, (2, 16))
    out = prior.loss(codes, indices, tiny_model.quantizer.unit_codebook(), sampling_ratio=1.0)
    assert not torch.allclose(out.logits[0], out.logits[1])


def test_prior_loss_is_mean_of_rounds(tiny_model):
    prior = tiny_model.prior.eval()
    codes = torch.nn.functional.normalize(torch.randn(2, 16, 16), dim=-1)
    indices = torch.randint(0, 64, (2, 16))
    out = prior.loss(codes, indices, tiny_model.quantizer.unit_codebook(), sampling_ratio=0.5)
    per_round = [torch.nn.functional.cross_entropy(logits.flatten(0, 1), indices[:, 1:].flatten()) for logits in out.logits]
    assert torch.allclose(out.loss, torch.stack(per_round).mean(), atol=1e-6)


def test_transformer_keep_equals_slicing():
    from larp_video.models.layers import Transformer

    stack = Transformer(dim=32, depth=2, num_heads=4)
    x = torch.randn(2, 10, 32)
    assert torch.allclose(stack(x, keep=slice(6, None)), stack(x)[:, 6:], atol=1e-5)
    assert torch.allclose(stack(x, keep=slice(0, 1)), stack(x)[:, :1], atol=1e-5)
