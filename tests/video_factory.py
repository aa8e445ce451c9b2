"""Test videos made at run time with PyAV, with each frame's index drawn into the frame.

``make_test_video`` encodes a moving colour pattern whose top row of 8x8 cells spells the frame
index in binary: a dark cell is 0, a bright cell 1, and the least significant bit is on the left.
A test reads the index back with ``decode_frame_index`` to check frame order after lossy coding.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CELL = 8
INDEX_BITS = 8
DARK, BRIGHT = 32, 224

# Fast settings per encoder. x264 gets 3 B-frames and an 8-frame GOP, so files have reordered
# frames and several keyframes to seek to.
DEFAULT_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "veryfast", "crf": "12", "bf": "3", "g": "8"},
    "libx265": {"preset": "ultrafast", "crf": "12", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0", "g": "8"},
    "mpeg4": {"b": "2M", "bf": "2", "g": "8"},
    "mjpeg": {"b": "4M"},
    "ffv1": {"g": "8"},
}


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """Return frame ``index`` of the test pattern as uint8 RGB (H, W, 3)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(2 * np.pi * (x + 2 * index) / width)
    green = 128 + 100 * np.cos(2 * np.pi * (y + index) / height)
    blue = 255 * x / max(width - 1, 1)
    image = np.stack([red, green, blue], axis=-1).round().astype(np.uint8)

    # Top row of cells: the index in binary.
    image[:CELL] = DARK
    for bit in range(min(INDEX_BITS, width // CELL)):
        if (index >> bit) & 1:
            image[:CELL, bit * CELL : (bit + 1) * CELL] = BRIGHT
    return image


def decode_frame_index(image: np.ndarray) -> int:
    """Read the index that ``frame_pattern`` drew into an upright RGB frame (H, W, 3)."""
    index = 0
    luma = image[:CELL].astype(np.float32).mean(axis=-1)
    for bit in range(min(INDEX_BITS, image.shape[1] // CELL)):
        # The inner 4x4 pixels of a cell, away from edges that coding blurs.
        cell = luma[2 : CELL - 2, bit * CELL + 2 : (bit + 1) * CELL - 2]
        if cell.mean() > (DARK + BRIGHT) / 2:
            index |= 1 << bit
    return index


def make_test_video(
    path: str | os.PathLike[str],
    num_frames: int = 24,
    width: int = 64,
    height: int = 48,
    fps: float = 25.0,
    codec: str = "libx264",
    pixel_format: str = "yuv420p",
    container: str | None = None,
    *,
    rotation: int = 0,
    frames: np.ndarray | None = None,
    codec_options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> Path:
    """Encode a test video and return its path.

    ``frames`` replaces the pattern with given uint8 frames, RGB (T, H, W, 3) or RGBA
    (T, H, W, 4). ``rotation`` stores a clockwise display rotation in the display matrix.
    ``container`` names the FFmpeg muxer; by default the suffix of ``path`` selects it.
    ``codec_options`` replace ``DEFAULT_CODEC_OPTIONS`` for the codec.
    """
    path = Path(path)
    if frames is not None:
        num_frames, height, width = frames.shape[:3]
    options = dict(DEFAULT_CODEC_OPTIONS.get(codec, {}) if codec_options is None else codec_options)

    muxer_options = dict(container_options or {})
    with av.open(str(path), mode="w", format=container, options=muxer_options) as output:
        stream = output.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.options = options
        if rotation:
            # PyAV takes the counterclockwise angle.
            stream.set_display_rotation(-rotation)

        for index in range(num_frames):
            if frames is None:
                image = frame_pattern(index, width, height)
            else:
                image = np.ascontiguousarray(frames[index])
            layout = "rgba" if image.shape[-1] == 4 else "rgb24"
            frame = av.VideoFrame.from_ndarray(image, format=layout)
            frame.pts = index
            frame.time_base = 1 / Fraction(fps).limit_denominator(1001)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


def copy_with_rotation(
    source: str | os.PathLike[str], path: str | os.PathLike[str], rotation: int
) -> Path:
    """Copy the video packets of ``source`` into ``path`` with a clockwise display rotation.

    Two encodings of the same frames are not always bit-identical: in the full test suite, PyAV
    18 files of the same frames now and then differed by a few levels. So a test that compares
    a rotated video with the plain one gives both the same packets.
    """
    path = Path(path)
    with av.open(str(source)) as input_file, av.open(str(path), mode="w") as output:
        input_stream = input_file.streams.video[0]
        stream = output.add_stream_from_template(input_stream)
        # PyAV takes the counterclockwise angle.
        stream.set_display_rotation(-rotation)
        for packet in input_file.demux(input_stream):
            if packet.dts is None:  # the flushing packet at the end
                continue
            packet.stream = stream
            output.mux(packet)
    return path


def make_audio_file(path: str | os.PathLike[str], seconds: float = 0.5) -> Path:
    """Write a silent mono 8 kHz PCM file (e.g. ``.wav``) with no video stream."""
    path = Path(path)
    sample_rate = 8000
    with av.open(str(path), mode="w") as output:
        stream = output.add_stream("pcm_s16le", rate=sample_rate)
        samples = np.zeros((1, int(sample_rate * seconds)), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path
