"""Tests of the offline parts of scripts/fetch_real_clips.py (no download)."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_real_clips.py"


@pytest.fixture(scope="module")
def fetch() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("fetch_real_clips", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the script runs.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_lists_split_and_label(fetch: ModuleType, tmp_path: Path) -> None:
    fetch.write_lists(tmp_path)
    manifest = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    train = list(csv.DictReader(open(tmp_path / "train.csv")))
    val = list(csv.DictReader(open(tmp_path / "val.csv")))

    assert list(manifest[0]) == ["id", "path", "action", "label"]
    assert len(manifest) == len(fetch.CLIPS)
    assert [row["path"] for row in val] == list(fetch.VALIDATION_CLIPS)
    assert len(train) + len(val) == len(manifest)
    assert {row["path"] for row in train}.isdisjoint(row["path"] for row in val)
    assert sorted(int(row["label"]) for row in manifest) == list(range(len(manifest)))
    assert "cockatoo.mp4" not in {row["path"] for row in manifest}


def test_licences_name_every_clip(fetch: ModuleType, tmp_path: Path) -> None:
    fetch.write_lists(tmp_path)
    page = (tmp_path / "LICENSES.md").read_text()
    for clip in fetch.CLIPS:
        assert f"| {clip.filename} | {clip.package}" in page


def test_resolve_follows_links_inside_package(fetch: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "usr" / "share" / "doc"
    folder.mkdir(parents=True)
    (folder / "clip.ogv.160p.ogv").write_bytes(b"video")
    os.symlink("clip.ogv.160p.ogv", folder / "relative.ogv")
    os.symlink("/usr/share/doc/clip.ogv.160p.ogv", folder / "absolute.ogv")

    for name in ("relative.ogv", "absolute.ogv"):
        resolved = fetch.resolve_inside(tmp_path, f"usr/share/doc/{name}")
        assert resolved == (folder / "clip.ogv.160p.ogv").resolve()


def test_resolve_rejects_link_outside_package(fetch: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.ogv").write_bytes(b"video")
    os.symlink("../outside.ogv", root / "escape.ogv")
    with pytest.raises(fetch.FetchError, match="inside the package"):
        fetch.resolve_inside(root, "escape.ogv")
