"""The reconstruction report: bounded best/worst clip tracking, the PSNR plot and the pages."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from larp_video.evaluation.report import BEST_GRID, PSNR_PLOT, WORST_GRID, ExtremeClips, plot_psnr, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _clip(value: float) -> torch.Tensor:
    return torch.full((3, 6, 8, 8), value)


def _offer_all(tracker: ExtremeClips, scores: list[float]) -> ExtremeClips:
    for index, psnr in enumerate(scores):
        tracker.add(psnr, index, _clip(0.5), _clip(0.4))
    return tracker


def test_extreme_clips_keep_lowest_and_highest():
    scores = [float(value) for value in range(20)]
    random.Random(0).shuffle(scores)
    tracker = _offer_all(ExtremeClips(3), scores)
    assert [clip.psnr for clip in tracker.worst()] == [0.0, 1.0, 2.0]
    assert [clip.psnr for clip in tracker.best()] == [19.0, 18.0, 17.0]
    assert len(tracker.clips()) == 6


def test_extreme_clips_keep_frames_of_kept_clips():
    tracker = _offer_all(ExtremeClips(1, frames_per_clip=4), [20.0, 30.0])
    worst = tracker.worst()[0]
    assert worst.original.shape == (4, 8, 8, 3)
    assert worst.original.dtype == np.uint8
    assert worst.reconstruction[0, 0, 0, 0] == round(0.4 * 255)


def test_extreme_clips_would_keep_only_extremes():
    tracker = _offer_all(ExtremeClips(2), [10.0, 20.0, 30.0, 40.0])
    assert not tracker.would_keep(25.0)
    assert tracker.would_keep(5.0)
    assert tracker.would_keep(45.0)


@pytest.mark.parametrize("ties", [False, True])
def test_extreme_clips_merge_equals_one_pass(ties):
    rng = random.Random(1)
    scores = [float(rng.randint(15, 18)) if ties else rng.uniform(15, 35) for _ in range(30)]
    single = _offer_all(ExtremeClips(4), scores)
    first, second = ExtremeClips(4), ExtremeClips(4)
    for index, psnr in enumerate(scores):
        (first if index % 2 else second).add(psnr, index, _clip(0.5), _clip(0.4))
    merged = ExtremeClips(4).merge(first.clips() + second.clips())
    assert [clip.video_index for clip in merged.worst()] == [clip.video_index for clip in single.worst()]
    assert [clip.video_index for clip in merged.best()] == [clip.video_index for clip in single.best()]


def test_extreme_clips_zero_keeps_nothing():
    tracker = _offer_all(ExtremeClips(0), [10.0, 20.0])
    assert tracker.clips() == []


def test_plot_psnr_writes_png(tmp_path):
    path = plot_psnr(tmp_path / "psnr.png", [21.0, 25.5, float("inf"), 30.25])
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_psnr_needs_finite_values(tmp_path):
    with pytest.raises(ValueError, match="no finite PSNR"):
        plot_psnr(tmp_path / "psnr.png", [float("inf")])


def test_write_report_pages_and_images(tmp_path):
    scores = [22.0, 31.0, 27.0, 18.5]
    tracker = _offer_all(ExtremeClips(2), scores)
    records = [
        {"video_index": index, "video_id": str(index), "path": f"v{index}.mp4", "start_frame": 3 * index,
         "psnr": psnr, "ssim": 0.5, "lpips": 0.2}
        for index, psnr in enumerate(scores)
    ]
    results = {
        "metrics": {"rfvd": 12.5, "psnr": sum(scores) / 4},
        "parameters": {"frames": 6, "resolution": 8, "manifest": {"path": "m.csv"}, "model": {"id": "tiny"}},
        "environment": {"date": "2026-01-01T00:00:00+00:00"},
    }
    report = write_report(tmp_path, results, records, tracker)

    text = report.read_text()
    assert f"![per-clip PSNR]({PSNR_PLOT})" in text
    assert f"({WORST_GRID})" in text
    assert "| 3 | 3 | v3.mp4 | 9 | 18.5000 | 0.5000 | 0.2000 |" in text
    assert text.index("v3.mp4") < text.index("v0.mp4")  # worst first
    for name in (PSNR_PLOT, WORST_GRID, BEST_GRID):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE, name
    assert "<img src='worst-clips.png'" in (tmp_path / "report.html").read_text()


def test_extreme_clips_ignore_repeated_clip():
    tracker = _offer_all(ExtremeClips(3), [10.0, 20.0])
    tracker.merge(tracker.clips())
    assert [clip.video_index for clip in tracker.worst()] == [0, 1]
