"""Typed dataclass configs that reject unknown keys and round-trip through JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT", bound="Config")


class ConfigError(ValueError):
    """A config dict or file does not match its dataclass."""


@dataclasses.dataclass
class Config:
    """Base class for the model configs.

    Subclasses are plain dataclasses. ``from_dict`` rejects keys that are not fields, so a typo
    in a config file fails loudly instead of being ignored, and nested ``Config`` fields are
    built from nested dicts.
    """

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
        if not isinstance(values, dict):
            raise ConfigError(f"{cls.__name__} expects a dict, got {type(values).__name__}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} key(s) {unknown}; valid keys are {sorted(fields)}"
            )

        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in values.items():
            nested = _config_class(hints[name])
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value)
            elif isinstance(value, list) and _is_tuple(hints[name]):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """Return a copy with ``changes`` applied; unknown names raise ``ConfigError``."""
        current = self.to_dict()
        for name, value in changes.items():
            if isinstance(value, Config):
                value = value.to_dict()
            current[name] = value
        return type(self).from_dict(current)

    def save_json(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")

    @classmethod
    def load_json(cls: type[ConfigT], path: str | os.PathLike) -> ConfigT:
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def _config_class(hint: Any) -> type[Config] | None:
    candidates = typing.get_args(hint) or (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, Config):
            return candidate
    return None


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple
