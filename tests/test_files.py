"""Written files get the mode of any new file (0666 less the umask), not mkstemp's private 0600."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from larp_video.files import atomic_write, new_file_mode
from larp_video.models.tokenizer import LARPTokenizer, TokenizerConfig
from larp_video.training.checkpoint_io import atomic_torch_save
from larp_video.video_tokens import tokenize_video


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_mode_follows_umask(umask):
    assert new_file_mode() == 0o666 & ~umask


def test_atomic_write_mode_and_content(tmp_path, umask):
    path = atomic_write(tmp_path / "a.txt", lambda temporary: temporary.write_text("new"))
    assert path.read_text() == "new"
    assert mode_of(path) == 0o666 & ~umask


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(temporary):
        temporary.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_saved_model_files_follow_umask(tmp_path, umask):
    model = LARPTokenizer(TokenizerConfig.preset("tiny", prior=None))
    directory = model.save_pretrained(tmp_path / "model")
    modes = {path.name: mode_of(path) for path in directory.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_token_file_follows_umask(tmp_path, umask):
    model = LARPTokenizer(TokenizerConfig.preset("tiny", prior=None)).eval()
    frames = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    path = tokenize_video(frames, model, fps=10).save(tmp_path / "tokens.safetensors")
    assert mode_of(path) == 0o666 & ~umask


def test_checkpoint_follows_umask(tmp_path, umask):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": torch.tensor(1)}, path)
    assert mode_of(path) == 0o666 & ~umask
