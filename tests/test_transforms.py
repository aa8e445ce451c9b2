"""Frame geometry for crop and pad fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from larp_video.data.transforms import (
    FrameGeometry,
    fit_to_model,
    frames_to_tensor,
    model_to_source,
    pad_frames,
    source_region,
    tensor_to_frames,
)


@pytest.mark.parametrize(
    "height, width, fit, resized",
    [
        (720, 1280, "crop", (64, 113)),
        (1280, 720, "crop", (113, 64)),
        (64, 64, "crop", (64, 64)),
        (720, 1280, "pad", (36, 64)),
        (1280, 720, "pad", (64, 36)),
        (2, 1000, "pad", (1, 64)),
    ],
)
def test_geometry_resized_size(height, width, fit, resized):
    geometry = FrameGeometry.compute(height, width, 64, fit)
    assert (geometry.resized_height, geometry.resized_width) == resized


def test_geometry_rejects_unknown_fit():
    with pytest.raises(ValueError, match="fit"):
        FrameGeometry.compute(10, 10, 8, "stretch")


def test_crop_fit_output_is_square():
    video = torch.rand(3, 5, 72, 128)
    geometry = FrameGeometry.compute(72, 128, 32, "crop")
    assert fit_to_model(video, geometry).shape == (3, 5, 32, 32)


def test_pad_fit_keeps_whole_frame():
    video = torch.rand(3, 2, 36, 64)
    geometry = FrameGeometry.compute(36, 64, 64, "pad")
    fitted = fit_to_model(video, geometry)
    top, left, height, width = geometry.content_box
    assert fitted.shape == (3, 2, 64, 64)
    assert torch.allclose(fitted[..., top : top + height, left : left + width], video)


def test_pad_round_trip_restores_source():
    video = torch.rand(3, 2, 36, 64)
    geometry = FrameGeometry.compute(36, 64, 64, "pad")
    restored = model_to_source(fit_to_model(video, geometry), geometry, "source")
    assert restored.shape == video.shape
    assert torch.allclose(restored, video, atol=1e-6)


def test_crop_source_box_is_centre_square():
    geometry = FrameGeometry.compute(720, 1280, 64, "crop")
    assert geometry.source_box == (0, 280, 720, 720)


def test_crop_model_to_source_size():
    geometry = FrameGeometry.compute(720, 1280, 64, "crop")
    decoded = torch.rand(3, 2, 64, 64)
    assert model_to_source(decoded, geometry, "source").shape == (3, 2, 720, 720)
    assert source_region(torch.rand(3, 2, 720, 1280), geometry).shape == (3, 2, 720, 720)


def test_pad_frames_repeats_last():
    video = torch.arange(3.0).view(1, 3, 1, 1)
    padded = pad_frames(video, 5)
    assert padded.flatten().tolist() == [0.0, 1.0, 2.0, 2.0, 2.0]


def test_frame_conversion_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    assert np.array_equal(tensor_to_frames(frames_to_tensor(frames)), frames)


def test_frames_to_tensor_rejects_float():
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(np.zeros((1, 2, 2, 3), dtype=np.float32))
