"""Tokenizing videos of any length and size and decoding them back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.video_tokens import TokenFileError, TokenizedVideo, codebook_fingerprint, decode_video, tokenize_video


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = LARPTokenizer(TokenizerConfig.preset("tiny", prior=None)).eval()
    torch.nn.init.normal_(model.head.linear.weight, std=0.02)
    return model


def frames(num_frames, height=24, width=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("num_frames, windows", [(1, 1), (8, 1), (9, 2), (19, 3)])
def test_window_count(model, num_frames, windows):
    tokens = tokenize_video(frames(num_frames), model, fps=10)
    assert tokens.indices.shape == (windows, 16)
    assert tokens.padding_frames == windows * 8 - num_frames


@pytest.mark.parametrize("fit, size", [("crop", (24, 24)), ("pad", (24, 40))])
def test_decode_restores_length_and_size(model, fit, size):
    tokens = tokenize_video(frames(19), model, fps=10, fit=fit)
    chunks = list(decode_video(tokens, model))
    assert sum(chunk.shape[1] for chunk in chunks) == 19
    assert chunks[0].shape[2:] == size


def test_decode_model_scale(model):
    tokens = tokenize_video(frames(8), model, fps=10, fit="pad")
    chunk = next(decode_video(tokens, model, scale="model"))
    assert chunk.shape[2:] == (19, 32)


def test_batch_size_does_not_change_tokens(model):
    video = frames(40)
    one = tokenize_video(video, model, fps=10, batch_size=1)
    many = tokenize_video(video, model, fps=10, batch_size=5)
    assert torch.equal(one.indices, many.indices)


def test_token_file_round_trip(tmp_path, model):
    tokens = tokenize_video(frames(11), model, fps=12.5, model_name="tiny")
    loaded = TokenizedVideo.load(tokens.save(tmp_path / "t.safetensors"))
    assert torch.equal(loaded.indices, tokens.indices)
    assert loaded.num_frames == 11
    assert loaded.fps == 12.5
    assert loaded.geometry == tokens.geometry
    assert loaded.model == "tiny"
    assert loaded.codebook == codebook_fingerprint(model)


def test_token_file_rejects_other_model(model):
    tokens = tokenize_video(frames(8), model, fps=10)
    other = LARPTokenizer(TokenizerConfig.preset("tiny", prior=None, num_tokens=8))
    with pytest.raises(TokenFileError, match="8 tokens per window|16 tokens per window"):
        list(decode_video(tokens, other))


def test_other_codebook_logs_warning(model, caplog):
    tokens = tokenize_video(frames(8), model, fps=10)
    torch.manual_seed(1)
    other = LARPTokenizer(TokenizerConfig.preset("tiny", prior=None)).eval()
    with caplog.at_level("WARNING", logger="larp_video.video_tokens"):
        list(decode_video(tokens, other))
    assert "another codebook" in caplog.text


def test_same_codebook_logs_no_warning(model, caplog):
    tokens = tokenize_video(frames(8), model, fps=10)
    with caplog.at_level("WARNING", logger="larp_video.video_tokens"):
        list(decode_video(tokens, model))
    assert "another codebook" not in caplog.text


def test_codebook_fingerprint_ignores_bf16_weights(model):
    bf16_model = LARPTokenizer(model.config)
    bf16_model.load_state_dict(model.state_dict())
    assert codebook_fingerprint(bf16_model.to(torch.bfloat16)) == codebook_fingerprint(model)


def test_token_file_rejects_random_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenizedVideo.load(path)


def test_rate_measures(model):
    tokens = tokenize_video(frames(16), model, fps=8)
    assert tokens.tokens_per_second == pytest.approx(2 * 16 / 2.0)
    assert tokens.bits_per_pixel == pytest.approx(32 * 6 / (16 * 32 * 32))


@pytest.mark.parametrize("bad", [np.zeros((4, 8, 8, 3), np.float32), np.zeros((0, 8, 8, 3), np.uint8)])
def test_tokenize_rejects_bad_arrays(model, bad):
    with pytest.raises(ValueError, match="uint8"):
        tokenize_video(bad, model, fps=10)


def test_tokenize_requires_fps_for_arrays(model):
    with pytest.raises(ValueError, match="fps"):
        tokenize_video(frames(4), model)
