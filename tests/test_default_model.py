"""The tokenizer shipped with the package still reaches the numbers in its model card."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from larp_video.pretrained import default_tokenizer_dir, load_tokenizer
from larp_video.reconstruct import reconstruct_video

DEMO_CLIP = Path(__file__).resolve().parents[1] / "assets" / "demo" / "cockatoo.mp4"


def card_value(name: str) -> float:
    """Read ``| name | value unit |`` from the bundled model card's results table."""
    card = (default_tokenizer_dir() / "MODEL_CARD.md").read_text()
    match = re.search(rf"^\| {re.escape(name)} \| ([0-9.]+)", card, flags=re.MULTILINE)
    assert match, f"the model card has no '| {name} |' row"
    return float(match.group(1))


def test_bundled_files_are_present():
    names = {path.name for path in default_tokenizer_dir().iterdir()}
    assert {"config.json", "model.safetensors", "MODEL_CARD.md"} <= names


def test_bundled_model_has_no_prior():
    model, _ = load_tokenizer(None)
    assert model.prior is None


@pytest.mark.slow
def test_bundled_model_reaches_card_psnr_on_demo_clip():
    model, name = load_tokenizer(None)
    result = reconstruct_video(DEMO_CLIP, model, None, progress=False, model_name=name)
    assert result.psnr == pytest.approx(card_value("PSNR on the demo clip"), abs=0.5)
    assert result.ssim == pytest.approx(card_value("SSIM on the demo clip"), abs=0.02)
    assert result.tokens_per_second == pytest.approx(card_value("tokens per second of video"), rel=1e-3)
