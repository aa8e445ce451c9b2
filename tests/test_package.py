"""The package root and the command's help."""

from __future__ import annotations

import pytest

import larp_video
from larp_video.cli.main import main


@pytest.mark.parametrize("name", larp_video.__all__)
def test_root_export_resolves(name):
    assert getattr(larp_video, name) is not None


def test_unknown_root_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute"):
        larp_video.NotAThing  # noqa: B018


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for command in ("reconstruct", "tokenize", "decode", "info", "convert", "train", "eval", "sample", "predict"):
        assert command in printed
