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
