"""Shared fixtures. Tests run on the CPU with tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def reference_dir() -> Path:
    return FIXTURES / "reference"


@pytest.fixture
def demo_clip() -> Path:
    return REPO_ROOT / "assets" / "demo" / "cockatoo.mp4"


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A saved tiny tokenizer (8 x 32 x 32 clips, 16 tokens) whose output head is not zero,
    so its reconstructions vary with the input."""
    from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig

    torch.manual_seed(0)
    model = LARPTokenizer(TokenizerConfig.preset("tiny"))
    torch.nn.init.normal_(model.head.linear.weight, std=0.02)
    return model.save_pretrained(tmp_path_factory.mktemp("tiny-tokenizer"))
