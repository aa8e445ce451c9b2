"""A report page for reconstruction evaluations: the best and worst clips, and the PSNR spread.

``ExtremeClips`` keeps the frames of only the k clips with the lowest and the k with the
highest PSNR while clips stream past (two bounded heaps), so a report over thousands of clips
needs memory for 2k clips. ``write_report`` writes ``report.md``, ``report.html`` and PNGs:
original | reconstruction frame grids of those clips and a plot of the per-clip PSNR.
"""

from __future__ import annotations

import dataclasses
import heapq
import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from larp_video.data.transforms import tensor_to_frames
from larp_video.evaluation.results import format_value
from larp_video.visualize import frame_rows, save_frame_grid

REPORT_FRAMES = 8
PSNR_PLOT = "psnr-per-clip.png"
WORST_GRID = "worst-clips.png"
BEST_GRID = "best-clips.png"


@dataclasses.dataclass
class ClipFrames:
    """Evenly spaced frames of one clip and its reconstruction, uint8 (k, H, W, 3) each."""

    psnr: float
    video_index: int
    original: np.ndarray
    reconstruction: np.ndarray


class ExtremeClips:
    """The ``k`` lowest-PSNR and ``k`` highest-PSNR clips seen so far, with their frames.

    Ties in PSNR go to the lower video index, so the kept clips do not depend on the order in
    which clips arrive (or on how they were split across ranks).
    """

    def __init__(self, k: int, frames_per_clip: int = REPORT_FRAMES):
        if k < 0:
            raise ValueError(f"k must be at least 0, got {k}")
        self.k = k
        self.frames_per_clip = frames_per_clip
        # Min-heaps whose root is the kept clip that leaves first: in _worst the highest PSNR,
        # in _best the lowest. Keys are unique because video indices are.
        self._worst: list[tuple[tuple[float, int], ClipFrames]] = []
        self._best: list[tuple[tuple[float, int], ClipFrames]] = []

    @staticmethod
    def _keys(psnr: float, video_index: int) -> tuple[tuple[float, int], tuple[float, int]]:
        return (-psnr, -video_index), (psnr, -video_index)

    def _enters(self, heap: list, key: tuple[float, int]) -> bool:
        return self.k > 0 and (len(heap) < self.k or key > heap[0][0])

    def would_keep(self, psnr: float, video_index: int = 0) -> bool:
        """Return whether a clip with ``psnr`` would enter the worst or the best list now."""
        worst_key, best_key = self._keys(psnr, video_index)
        return self._enters(self._worst, worst_key) or self._enters(self._best, best_key)

    def add_frames(self, clip: ClipFrames) -> None:
        for heap, key in zip((self._worst, self._best), self._keys(clip.psnr, clip.video_index)):
            if not self._enters(heap, key) or any(kept.video_index == clip.video_index for _, kept in heap):
                continue
            if len(heap) < self.k:
                heapq.heappush(heap, (key, clip))
            else:
                heapq.heapreplace(heap, (key, clip))

    def add(self, psnr: float, video_index: int, original: torch.Tensor, reconstruction: torch.Tensor) -> None:
        """Offer float (3, T, H, W) clips in [0, 1]; frames are kept only when the clip enters a list."""
        if not self.would_keep(psnr, video_index):
            return
        original_frames, reconstructed_frames = frame_rows(
            [tensor_to_frames(original), tensor_to_frames(reconstruction)], self.frames_per_clip
        )
        self.add_frames(ClipFrames(psnr, video_index, np.stack(original_frames), np.stack(reconstructed_frames)))

    def clips(self) -> list[ClipFrames]:
        """Return all kept clips (a clip in both lists appears once)."""
        kept = {clip.video_index: clip for _, clip in self._worst + self._best}
        return list(kept.values())

    def merge(self, clips: Iterable[ClipFrames]) -> ExtremeClips:
        """Offer more kept clips, e.g. those gathered from other ranks; returns self."""
        for clip in clips:
            self.add_frames(clip)
        return self

    def worst(self) -> list[ClipFrames]:
        """Return the kept lowest-PSNR clips, lowest first."""
        return sorted((clip for _, clip in self._worst), key=lambda clip: (clip.psnr, clip.video_index))

    def best(self) -> list[ClipFrames]:
        """Return the kept highest-PSNR clips, highest first."""
        return sorted((clip for _, clip in self._best), key=lambda clip: (-clip.psnr, clip.video_index))


def plot_psnr(path: str | os.PathLike, psnr_values: Sequence[float]) -> Path:
    """Plot per-clip PSNR, sorted and as a histogram, with the mean marked; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.sort(np.asarray([value for value in psnr_values if math.isfinite(value)], dtype=np.float64))
    if values.size == 0:
        raise ValueError("no finite PSNR values to plot")
    mean = float(values.mean())

    figure, (sorted_axes, histogram_axes) = plt.subplots(1, 2, figsize=(10, 3.6))
    sorted_axes.plot(np.arange(1, values.size + 1), values, marker="." if values.size <= 200 else None, linewidth=1)
    sorted_axes.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.2f} dB")
    sorted_axes.set(xlabel="clip (sorted by PSNR)", ylabel="PSNR (dB)", title="Per-clip PSNR, sorted")
    sorted_axes.legend(loc="lower right")
    histogram_axes.hist(values, bins=min(40, max(5, values.size // 4)), color="tab:blue", alpha=0.8)
    histogram_axes.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.2f} dB")
    histogram_axes.set(xlabel="PSNR (dB)", ylabel="clips", title="Histogram")
    histogram_axes.legend(loc="upper left")
    figure.tight_layout()

    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _save_grid(path: Path, clips: Sequence[ClipFrames]) -> Path | None:
    if not clips:
        return None
    rows, labels = [], []
    for clip in clips:
        rows += [list(clip.original), list(clip.reconstruction)]
        labels += [f"video {clip.video_index}", f"{clip.psnr:.2f} dB"]
    return save_frame_grid(path, rows, labels)


def _clip_rows(clips: Sequence[ClipFrames], records: Mapping[int, Mapping[str, Any]]) -> list[list[str]]:
    columns = ("video_index", "video_id", "path", "start_frame", "psnr", "ssim", "lpips")
    rows = []
    for clip in clips:
        record = records.get(clip.video_index, {"video_index": clip.video_index, "psnr": clip.psnr})
        rows.append([format_value(record.get(column, "")) for column in columns])
    return rows


CLIP_COLUMNS = ("video", "id", "path", "start frame", "PSNR (dB)", "SSIM", "LPIPS")


def _markdown_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    output_dir: str | os.PathLike,
    results: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    extremes: ExtremeClips,
) -> Path:
    """Write ``report.md``, ``report.html`` and the PNGs for a reconstruction evaluation; returns report.md."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_psnr(output_dir / PSNR_PLOT, [record["psnr"] for record in records])
    worst, best = extremes.worst(), extremes.best()
    worst_grid = _save_grid(output_dir / WORST_GRID, worst)
    best_grid = _save_grid(output_dir / BEST_GRID, best)

    by_index = {record["video_index"]: record for record in records}
    metric_rows = [[name, format_value(value)] for name, value in results["metrics"].items()]
    parameters = results["parameters"]
    summary = (
        f"{len(records)} clips of {parameters.get('frames')} frames at {parameters.get('resolution')} x "
        f"{parameters.get('resolution')} from {parameters.get('manifest', {}).get('path')}; model "
        f"{parameters.get('model', {}).get('id')}; {results['environment'].get('date')}. "
        "Every protocol parameter is in results.json."
    )
    sections = [
        ("Worst clips by PSNR", worst, worst_grid),
        ("Best clips by PSNR", best, best_grid),
    ]

    markdown = ["# Reconstruction report", "", summary, "", "## Metrics", ""]
    markdown += _markdown_rows(("metric", "value"), metric_rows)
    markdown += ["", "## Per-clip PSNR", "", f"![per-clip PSNR]({PSNR_PLOT})", ""]
    page = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Reconstruction report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
        "<h1>Reconstruction report</h1>",
        f"<p>{html.escape(summary)}</p>",
        "<h2>Metrics</h2>",
        _html_table(("metric", "value"), metric_rows),
        "<h2>Per-clip PSNR</h2>",
        f"<img src='{PSNR_PLOT}' alt='per-clip PSNR'>",
    ]
    for title, clips, grid in sections:
        rows = _clip_rows(clips, by_index)
        markdown += [f"## {title}", "", "Rows: original, then reconstruction, for each clip.", ""]
        page += [f"<h2>{html.escape(title)}</h2>", "<p>Rows: original, then reconstruction, for each clip.</p>"]
        if grid is not None:
            markdown += [f"![{title}]({grid.name})", ""]
            page.append(f"<img src='{grid.name}' alt='{html.escape(title)}'>")
        markdown += _markdown_rows(CLIP_COLUMNS, rows) + [""]
        page.append(_html_table(CLIP_COLUMNS, rows))
    page.append("</body></html>")

    (output_dir / "report.html").write_text("\n".join(page) + "\n", encoding="utf-8")
    path = output_dir / "report.md"
    path.write_text("\n".join(markdown) + "\n", encoding="utf-8")
    return path
