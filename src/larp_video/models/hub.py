"""Saving and loading models as a directory of ``config.json`` plus ``model.safetensors``.

This is the on-disk layout of huggingface_hub's ``PyTorchModelHubMixin``, which the released
LARP checkpoints use, so a directory written here can be uploaded to the Hub as it is. Our
``config.json`` wraps the dataclass config::

    {"larp_video_format": 1, "model_type": "LARPTokenizer", "config": {...}}

A ``config.json`` without ``larp_video_format`` is treated as a released checkpoint and handed
to the model class's ``_from_released`` converter.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from larp_video.config import Config
from larp_video.files import atomic_write

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
STATE_DICT_PREFIXES = ("module.", "_orig_mod.")


class PretrainedNotFoundError(FileNotFoundError):
    """A model directory or Hub repository could not be found or downloaded."""


class ModelFileError(ValueError):
    """A model directory or checkpoint exists but does not hold the requested model."""


def load_checkpoint_file(path: str | os.PathLike, required_key: str, kind: str) -> dict[str, Any]:
    """Read a Lightning ``.ckpt`` with ``torch.load(weights_only=True)`` and check it has ``required_key``.

    Raise ``FileNotFoundError`` for a missing file and ``ModelFileError`` for a file that is not
    a checkpoint or is the checkpoint of another kind of training run (``kind`` names the
    expected one, e.g. "tokenizer").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises pickle, zip and runtime errors for foreign files
        raise ModelFileError(
            f"cannot read checkpoint {path}: torch.load failed ({type(error).__name__}); "
            f"pass a .ckpt written by `larp train {kind}`"
        ) from error
    if not isinstance(checkpoint, dict) or required_key not in checkpoint:
        raise ModelFileError(
            f"{path} is not a {kind} training checkpoint (it has no {required_key!r}); "
            f"pass a .ckpt written by `larp train {kind}`"
        )
    return checkpoint


def strip_state_dict_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes from keys."""
    cleaned = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in STATE_DICT_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        cleaned[key] = value
    return cleaned


def resolve_pretrained_dir(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | None = None,
) -> Path:
    """Return a local directory with ``config.json`` and ``model.safetensors``.

    A local directory is used as it is. Anything else is taken as a Hugging Face Hub
    repository id and downloaded into the Hub cache (``HF_HOME``), which needs internet
    unless the files are cached already.
    """
    local = Path(path_or_repo_id).expanduser()
    if local.is_dir():
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (local / name).is_file()]
        if missing:
            raise PretrainedNotFoundError(
                f"model directory {local} has no {' or '.join(missing)}; a model directory holds "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} (write one with save_pretrained or `larp convert`)"
            )
        return local
    if local.exists():
        raise PretrainedNotFoundError(f"{local} is a file; pass the directory that contains {CONFIG_NAME}")

    repo_id = str(path_or_repo_id)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise PretrainedNotFoundError(
            f"model {repo_id!r} is neither a local directory nor a Hub repository id of the form 'owner/name'"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        downloaded = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
            local_files_only=local_files_only,
            token=token,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise PretrainedNotFoundError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({error.__class__.__name__}: {error}). "
            "Without internet, download the repository elsewhere and pass its local directory instead."
        ) from error
    return Path(downloaded)


class PretrainedMixin:
    """``save_pretrained``/``from_pretrained`` for a module whose ``__init__`` takes one config."""

    config_class: ClassVar[type[Config]]
    config: Config

    def save_pretrained(self, directory: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``.

        Each file is written to a temporary name and renamed, so an interrupted save never
        leaves a truncated file under the final name. ``dtype`` casts floating-point tensors
        (for example ``torch.float16`` to halve the size of a shipped model).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state_dict = {}
        for key, value in self.state_dict().items():
            value = value.detach().cpu()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            state_dict[key] = value.contiguous()

        document = {
            "larp_video_format": FORMAT_VERSION,
            "model_type": type(self).__name__,
            "config": self.config.to_dict(),
        }
        atomic_write(directory / CONFIG_NAME, lambda path: path.write_text(json.dumps(document, indent=2) + "\n"))
        atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(state_dict, str(path)))
        return directory

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | None = None,
        map_location: str | torch.device = "cpu",
        **config_overrides: Any,
    ):
        """Load a model saved by ``save_pretrained`` or a released checkpoint of the same kind.

        ``path_or_repo_id`` is a local directory or a Hugging Face Hub repository id.
        ``config_overrides`` replace config fields that do not change the weights' shapes.
        """
        directory = resolve_pretrained_dir(
            path_or_repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        try:
            with open(directory / CONFIG_NAME, encoding="utf-8") as handle:
                document = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelFileError(f"{directory / CONFIG_NAME} is not valid JSON ({error})") from error
        try:
            weights = load_file(str(directory / WEIGHTS_NAME), device=str(map_location))
        except Exception as error:  # safetensors raises several types for malformed files
            raise ModelFileError(f"cannot read {directory / WEIGHTS_NAME}: {error}") from error
        state_dict = strip_state_dict_prefixes(weights)

        if "larp_video_format" not in document:
            logger.info("loading %s as a released checkpoint", directory)
            return cls._from_released(document, state_dict, **config_overrides)

        if document.get("model_type") != cls.__name__:
            raise ModelFileError(
                f"{directory / CONFIG_NAME} describes a {document.get('model_type')!r}, "
                f"not a {cls.__name__}; load it with that class instead"
            )
        config = cls.config_class.from_dict(document["config"])
        if config_overrides:
            config = config.replace(**config_overrides)
        model = cls(config)
        model.load_state_dict(_match_dtypes(state_dict, model), strict=True)
        return model

    @classmethod
    def _from_released(cls, released_config: dict[str, Any], state_dict: dict[str, torch.Tensor], **overrides: Any):
        raise ValueError(
            f"{cls.__name__} cannot read this config.json: it has no 'larp_video_format' key "
            "and this model type has no converter for released checkpoints"
        )


def _match_dtypes(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Cast floating-point tensors to the dtype of the model's own tensors (fp16 files load as fp32)."""
    own = model.state_dict()
    matched = {}
    for key, value in state_dict.items():
        target = own.get(key)
        if target is not None and value.is_floating_point() and value.dtype != target.dtype:
            value = value.to(target.dtype)
        matched[key] = value
    return matched


