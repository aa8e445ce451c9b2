"""Results files of the evaluation protocols, with the provenance that makes numbers comparable.

``results.json`` keeps the numbers next to every parameter that changes them: the video list
and its SHA-256, counts, seed, resolution, clip rule, the metric networks' weight files and
their SHA-256, the model, precision, package versions and the date. ``results.md`` shows the
same as markdown tables.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from larp_video import __version__
from larp_video.evaluation.weights import sha256_of_file


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """Return the path, size and SHA-256 of a file."""
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_of_file(path)}


def weights_record(network: torch.nn.Module) -> dict[str, Any]:
    """Describe the weights of a metric network loaded by ``load_i3d`` or ``load_lpips``.

    Networks built another way (test stubs, custom extractors) are reported as "unrecorded".
    """
    files = [file_record(path) for path in getattr(network, "weights_files", ()) if Path(path).is_file()]
    return {
        "source": getattr(network, "weights_source", "unrecorded"),
        "origin": getattr(network, "weights_origin", type(network).__name__),
        "files": files,
    }


def model_record(model: torch.nn.Module, name: str) -> dict[str, Any]:
    """Describe a tokenizer: its name, clip shape, token count, codebook and weight file."""
    config = model.config
    record: dict[str, Any] = {
        "id": name,
        "clip_frames": config.num_frames,
        "image_size": config.image_size,
        "tokens_per_clip": config.num_tokens,
        "codebook_size": config.codebook_size,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }
    location = Path(name)
    weights_file = location / "model.safetensors" if location.is_dir() else location
    if weights_file.is_file():
        record["weights"] = file_record(weights_file)
    return record


def environment_record(device: torch.device | str | None = None) -> dict[str, Any]:
    """Return package versions, the device and the current UTC date and time."""
    record: dict[str, Any] = {
        "larp_video": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device is not None:
        record["device"] = str(device)
        if torch.device(device).type == "cuda":
            record["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return record


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten nested dicts into (dotted key, value) pairs; lists of dicts are numbered."""
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            pairs.extend(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for index, item in enumerate(value):
                pairs.extend(flatten(item, f"{name}.{index}."))
        else:
            pairs.append((name, value))
    return pairs


def format_value(value: Any) -> str:
    """Format a value for a markdown table cell."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(item) for item in value)
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {format_value(value)} |" for name, value in rows]
    return "\n".join(lines)


def results_markdown(results: Mapping[str, Any]) -> str:
    """Render results as markdown: the metrics, then every parameter, then warnings."""
    parts = [
        f"# larp eval {results['protocol']}",
        "",
        results.get("description", ""),
        "",
        "## Metrics",
        "",
        markdown_table(list(results["metrics"].items()), ("metric", "value")),
        "",
        "## Protocol",
        "",
        markdown_table(flatten(results["parameters"]), ("parameter", "value")),
        "",
        "## Environment",
        "",
        markdown_table(flatten(results["environment"]), ("item", "value")),
    ]
    if results.get("warnings"):
        parts += ["", "## Warnings", ""] + [f"- {warning}" for warning in results["warnings"]]
    return "\n".join(parts) + "\n"


def write_results(output_dir: str | os.PathLike, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``output_dir`` and return their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    markdown_path = output_dir / "results.md"
    markdown_path.write_text(results_markdown(results), encoding="utf-8")
    return json_path, markdown_path
