"""Tests of video reading and writing on files that PyAV encodes at run time."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
from video_factory import copy_with_rotation, decode_frame_index, frame_pattern, make_audio_file, make_test_video

from larp_video.data import video_decoding
from larp_video.data.video_io import (
    EmptyVideoError,
    NoVideoStreamError,
    TooFewFramesError,
    VideoDecodeError,
    VideoInfo,
    VideoNotFoundError,
    VideoReadError,
    VideoWriter,
    frame_to_rgb,
    iter_video,
    probe_video,
    read_video,
    write_video,
)

# (suffix, codec, pixel format): one row per container and decoding path under test.
FORMATS = [
    ("mp4", "libx264", "yuv420p"),
    ("webm", "libvpx-vp9", "yuv420p"),
    ("mkv", "ffv1", "yuv420p"),
    ("avi", "mjpeg", "yuvj420p"),
    ("avi", "mpeg4", "yuv420p"),
    ("mkv", "ffv1", "gray"),
    ("mkv", "ffv1", "yuv420p10le"),
    ("mkv", "ffv1", "yuv444p12le"),
    ("mp4", "libx265", "yuv420p10le"),
    ("mov", "png", "rgba"),
    ("mkv", "ffv1", "yuva420p"),
]
FORMAT_IDS = [f"{suffix}-{codec}-{pixel_format}" for suffix, codec, pixel_format in FORMATS]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def flat_frames(
    colors: list[tuple[int, int, int]], width: int = 32, height: int = 16
) -> np.ndarray:
    """Return one frame (T, H, W, 3) per colour, each filled with that colour."""
    return np.stack([np.full((height, width, 3), color, dtype=np.uint8) for color in colors])


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 24-frame 64x48 video per row of FORMATS, keyed by its id."""
    folder = tmp_path_factory.mktemp("formats")
    return {
        name: make_test_video(folder / f"{name}.{suffix}", codec=codec, pixel_format=pixel_format)
        for name, (suffix, codec, pixel_format) in zip(FORMAT_IDS, FORMATS)
    }


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 frames of H.264 with B-frames and a keyframe every 8 frames."""
    return make_test_video(tmp_path_factory.mktemp("long") / "long.mp4", num_frames=96)


# Formats, order, counts and fps.


@pytest.mark.parametrize("name", FORMAT_IDS)
def test_probe_counts_frames(videos: dict[str, Path], name: str) -> None:
    info = probe_video(videos[name])
    assert info.num_frames == 24
    assert info.fps == 25.0
    assert (info.width, info.height) == (64, 48)
    assert info.duration == pytest.approx(24 / 25)


@pytest.mark.parametrize("name", FORMAT_IDS)
def test_read_returns_frames_in_order(videos: dict[str, Path], name: str) -> None:
    frames, info = read_video(videos[name])
    assert frames.dtype == np.uint8
    assert frames.shape == (24, 48, 64, 3)
    assert [decode_frame_index(frame) for frame in frames] == list(range(24))
    assert info == probe_video(videos[name])


@pytest.mark.parametrize("name", FORMAT_IDS)
def test_read_matches_pattern(videos: dict[str, Path], name: str) -> None:
    frames, _ = read_video(videos[name], 3, 1)
    expected = frame_pattern(3, 64, 48)
    if "gray" in name:
        # Gray keeps the BT.601 luma of the pattern in all three channels.
        expected = np.repeat(
            (expected.astype(np.float64) @ [0.299, 0.587, 0.114]).round()[..., None], 3, axis=2
        )
        assert np.array_equal(frames[0][..., 0], frames[0][..., 2])
    assert psnr(frames[0], expected) > 30


def test_info_reports_stream_pixel_format(videos: dict[str, Path]) -> None:
    assert probe_video(videos["mkv-ffv1-yuv420p10le"]).pixel_format == "yuv420p10le"
    assert probe_video(videos["mp4-libx264-yuv420p"]).codec == "h264"


def test_mp4_has_b_frames(videos: dict[str, Path]) -> None:
    with av.open(str(videos["mp4-libx264-yuv420p"])) as container:
        picture_types = {frame.pict_type for frame in container.decode(video=0)}
    assert av.video.frame.PictureType.B in picture_types


def test_webm_header_has_no_frame_count(videos: dict[str, Path]) -> None:
    with av.open(str(videos["webm-libvpx-vp9-yuv420p"])) as container:
        assert container.streams.video[0].frames == 0
    assert probe_video(videos["webm-libvpx-vp9-yuv420p"]).num_frames == 24


@pytest.mark.parametrize(
    ("suffix", "fps"), [("mp4", 12.5), ("mkv", 30000 / 1001), ("webm", 30.0), ("avi", 10.0)]
)
def test_probe_measures_fps(tmp_path: Path, suffix: str, fps: float) -> None:
    codec = {"mp4": "libx264", "mkv": "ffv1", "webm": "libvpx-vp9", "avi": "mjpeg"}[suffix]
    pixel_format = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    path = make_test_video(tmp_path / f"rate.{suffix}", 30, 32, 16, fps, codec, pixel_format)
    assert probe_video(path).fps == pytest.approx(fps, rel=1e-6)


def test_probe_single_frame_uses_header_rate(tmp_path: Path) -> None:
    path = make_test_video(tmp_path / "one.mkv", num_frames=1, fps=15, codec="ffv1")
    info = probe_video(path)
    assert info.num_frames == 1
    assert info.fps == 15.0


def test_probe_demo_clip(demo_clip: Path) -> None:
    info = probe_video(demo_clip)
    assert info.num_frames == 280
    assert info.fps == 20.0
    assert (info.width, info.height) == (1280, 720)
    assert info.pixel_format == "yuv444p"


def test_read_demo_clip_seek_matches_sequential(demo_clip: Path) -> None:
    # The demo clip's keyframes decode correctly only after the decoder has seen the first
    # packet's x264 version message, so this covers the decoder priming before a seek.
    info = probe_video(demo_clip)
    sequential, _ = read_video(demo_clip, 150, 4)
    seeked, _ = read_video(demo_clip, 150, 4, info=info)
    assert np.array_equal(seeked, sequential)


# Rotation.


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_read_applies_rotation(tmp_path: Path, rotation: int) -> None:
    plain = make_test_video(tmp_path / "plain.mp4", num_frames=4)
    rotated = copy_with_rotation(plain, tmp_path / "rotated.mp4", rotation)
    plain_frames, _ = read_video(plain)
    rotated_frames, info = read_video(rotated)

    assert info.rotation == rotation
    expected_shape = (4, 64, 48, 3) if rotation in (90, 270) else (4, 48, 64, 3)
    assert rotated_frames.shape == expected_shape
    assert (info.height, info.width) == expected_shape[1:3]
    # Clockwise rotation; np.rot90 with k=-1 turns clockwise.
    expected = np.rot90(plain_frames, k=-rotation // 90, axes=(1, 2))
    assert np.array_equal(rotated_frames, expected)


def test_rotation_seek_and_iter_agree(tmp_path: Path) -> None:
    path = make_test_video(tmp_path / "rotated.mp4", num_frames=20, rotation=90)
    info = probe_video(path)
    frames, _ = read_video(path)
    seeked, _ = read_video(path, 10, 5, info=info)
    chunks = list(iter_video(path, 8))
    assert np.array_equal(seeked, frames[10:15])
    assert np.array_equal(np.concatenate(chunks), frames)


# Pixel formats.


def test_high_bit_depth_levels(tmp_path: Path) -> None:
    colors = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 30, 90)]
    path = make_test_video(
        tmp_path / "ten.mkv", codec="ffv1", pixel_format="yuv420p10le", frames=flat_frames(colors)
    )
    frames, _ = read_video(path)
    centers = frames[:, 8, 16].astype(int)
    assert centers[0].tolist() == [255, 255, 255]
    assert centers[1].tolist() == [0, 0, 0]
    assert np.abs(centers[2] - 128).max() <= 1
    assert np.abs(centers[3] - [200, 30, 90]).max() <= 2


def test_gray_levels(tmp_path: Path) -> None:
    levels = [0, 16, 128, 235, 255]
    frames_in = flat_frames([(level,) * 3 for level in levels])
    path = make_test_video(
        tmp_path / "gray.mkv", codec="ffv1", pixel_format="gray", frames=frames_in
    )
    frames, _ = read_video(path)
    assert np.array_equal(frames[:, 8, 16], frames_in[:, 8, 16])


def test_alpha_is_dropped(tmp_path: Path) -> None:
    colors = flat_frames([(200, 30, 90), (10, 220, 40)])
    alpha = np.zeros((2, 16, 32, 1), dtype=np.uint8)
    alpha[:, :, 16:] = 255
    rgba = np.concatenate([colors, alpha], axis=-1)
    path = make_test_video(
        tmp_path / "alpha.mkv", codec="ffv1", pixel_format="yuva420p", frames=rgba
    )
    frames, _ = read_video(path)
    transparent, opaque = frames[:, 8, 4].astype(int), frames[:, 8, 28].astype(int)
    assert np.array_equal(transparent, opaque)
    assert np.abs(transparent - colors[:, 8, 4]).max() <= 2


def _flat_frame(pixel_format: str, planes: tuple[int, ...], color_range: int) -> av.VideoFrame:
    frame = av.VideoFrame(16, 16, pixel_format)
    dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
    for plane, value in zip(frame.planes, planes):
        plane.update(np.full(plane.buffer_size // dtype().itemsize, value, dtype=dtype).tobytes())
    frame.color_range = color_range
    return frame


MPEG, JPEG, UNSPECIFIED = 1, 2, 0


@pytest.mark.parametrize(
    ("pixel_format", "planes", "color_range", "expected"),
    [
        ("yuv420p", (235, 128, 128), UNSPECIFIED, 255),
        ("yuv420p", (16, 128, 128), MPEG, 0),
        ("yuv420p", (255, 128, 128), JPEG, 255),
        ("yuvj420p", (255, 128, 128), UNSPECIFIED, 255),
        ("yuv420p10le", (940, 512, 512), MPEG, 255),
        ("yuv422p12le", (3760, 2048, 2048), MPEG, 255),
        ("yuv440p", (235, 128, 128), MPEG, 255),
        ("nv12", (235, 128), MPEG, 255),
        ("gray", (235,), MPEG, 255),
        ("gray", (16,), MPEG, 0),
        ("gray", (235,), UNSPECIFIED, 235),
        ("gray10le", (1023,), JPEG, 255),
        ("gray12le", (3760,), MPEG, 255),
    ],
)
def test_frame_to_rgb_levels(
    pixel_format: str, planes: tuple[int, ...], color_range: int, expected: int
) -> None:
    rgb = frame_to_rgb(_flat_frame(pixel_format, planes, color_range))
    assert rgb.shape == (16, 16, 3)
    assert np.array_equal(rgb[8, 8], [expected] * 3)


def test_frame_to_rgb_drops_rgba_alpha() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 30, 90)
    rgb = frame_to_rgb(av.VideoFrame.from_ndarray(rgba, format="rgba"))
    assert rgb[0, 0].tolist() == [200, 30, 90]


def test_frame_to_rgb_reads_palette() -> None:
    frame = av.VideoFrame(4, 4, "pal8")
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[1] = (90, 30, 200, 255)  # B, G, R, A
    frame.planes[1].update(palette.tobytes())
    frame.planes[0].update(bytes([1]) * frame.planes[0].buffer_size)
    assert frame_to_rgb(frame)[0, 0].tolist() == [200, 30, 90]


# Seeking and ranges.


@pytest.mark.parametrize("start", [1, 7, 8, 9, 40, 80])
def test_seek_matches_sequential(
    long_mp4: Path, start: int, caplog: pytest.LogCaptureFixture
) -> None:
    info = probe_video(long_mp4)
    sequential, _ = read_video(long_mp4, start, 16)
    with caplog.at_level(logging.DEBUG, logger="larp_video.data.video_decoding"):
        seeked, _ = read_video(long_mp4, start, 16, info=info)
    assert "seeked to frame" in caplog.text
    assert np.array_equal(seeked, sequential)
    assert [decode_frame_index(frame) for frame in seeked] == list(range(start, start + 16))


@pytest.mark.parametrize("name", FORMAT_IDS)
def test_seek_matches_sequential_per_format(videos: dict[str, Path], name: str) -> None:
    info = probe_video(videos[name])
    sequential, _ = read_video(videos[name], 13, 6)
    seeked, _ = read_video(videos[name], 13, 6, info=info)
    assert np.array_equal(seeked, sequential)


def test_read_converts_only_requested_frames(
    long_mp4: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted = []
    original = video_decoding.frame_to_rgb

    def counting_frame_to_rgb(frame: av.VideoFrame, rotation: int = 0, reformatters=None) -> np.ndarray:
        converted.append(frame.pts)
        return original(frame, rotation, reformatters)

    monkeypatch.setattr(video_decoding, "frame_to_rgb", counting_frame_to_rgb)
    read_video(long_mp4, 80, 4)
    assert len(converted) == 4


def test_read_range_returns_exact_frames(long_mp4: Path) -> None:
    frames, info = read_video(long_mp4, 90)
    assert [decode_frame_index(frame) for frame in frames] == list(range(90, 96))
    assert info.num_frames == 96


def test_read_with_stale_info_raises(tmp_path: Path, long_mp4: Path) -> None:
    other = make_test_video(tmp_path / "other.mp4", num_frames=10, fps=10)
    with pytest.raises(VideoReadError):
        read_video(other, 2, 4, info=probe_video(long_mp4))


@pytest.mark.parametrize(("start", "count"), [(90, 7), (96, 1), (96, None), (200, 1)])
def test_read_past_end_raises(long_mp4: Path, start: int, count: int | None) -> None:
    info = probe_video(long_mp4)
    with pytest.raises(TooFewFramesError, match="the video has 96 frames"):
        read_video(long_mp4, start, count)
    with pytest.raises(TooFewFramesError, match="the video has 96 frames"):
        read_video(long_mp4, start, count, info=info)


@pytest.mark.parametrize(("start", "count"), [(-1, 1), (0, 0), (1.5, 2)])
def test_read_invalid_range_raises(long_mp4: Path, start: float, count: int) -> None:
    with pytest.raises(ValueError):
        read_video(long_mp4, start, count)  # type: ignore[arg-type]


# Streaming.


@pytest.mark.parametrize("with_info", [False, True])
def test_iter_chunks(long_mp4: Path, with_info: bool) -> None:
    info = probe_video(long_mp4) if with_info else None
    chunks = list(iter_video(long_mp4, 10, start_frame=50, max_frames=25, info=info))
    assert [len(chunk) for chunk in chunks] == [10, 10, 5]
    frames = np.concatenate(chunks)
    assert [decode_frame_index(frame) for frame in frames] == list(range(50, 75))


def test_iter_to_end_matches_read(long_mp4: Path) -> None:
    frames, _ = read_video(long_mp4)
    chunks = list(iter_video(long_mp4, 32))
    assert [len(chunk) for chunk in chunks] == [32, 32, 32]
    assert np.array_equal(np.concatenate(chunks), frames)


def test_iter_past_end_raises(long_mp4: Path) -> None:
    with pytest.raises(TooFewFramesError):
        list(iter_video(long_mp4, 4, start_frame=96))
    with pytest.raises(TooFewFramesError):
        list(iter_video(long_mp4, 4, start_frame=96, info=probe_video(long_mp4)))


def test_iter_invalid_chunk_raises(long_mp4: Path) -> None:
    with pytest.raises(ValueError, match="chunk_frames"):
        next(iter_video(long_mp4, 0))


# Errors.


def test_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "missing.mp4"
    with pytest.raises(VideoNotFoundError) as caught:
        probe_video(path)
    assert not isinstance(caught.value, FileNotFoundError)
    assert str(caught.value) == f"cannot read video {path}: the file does not exist"
    assert caught.value.path == str(path)


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError, match="not a regular file"):
        read_video(tmp_path)


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(EmptyVideoError, match=r"empty\.mp4: the file is empty"):
        probe_video(path)


def test_stream_without_decodable_frames_raises(tmp_path: Path) -> None:
    # Remux an H.264 stream without its only keyframe: the decoder outputs no frame.
    source = make_test_video(
        tmp_path / "source.mkv", num_frames=8, codec_options={"g": "100", "bf": "0"}
    )
    target = tmp_path / "no-keyframe.mkv"
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream_in = reader.streams.video[0]
        stream_out = writer.add_stream_from_template(stream_in)
        for packet in reader.demux(stream_in):
            if packet.dts is not None and not packet.is_keyframe:
                packet.stream = stream_out
                writer.mux(packet)
    with pytest.raises(EmptyVideoError, match="no decodable frames"):
        probe_video(target)


def test_audio_only_raises(tmp_path: Path) -> None:
    path = make_audio_file(tmp_path / "speech.wav")
    with pytest.raises(NoVideoStreamError) as caught:
        read_video(path)
    assert str(caught.value) == (
        f"cannot read video {path}: the file has no video stream (it has 1 audio stream)"
    )


def test_random_bytes_raise(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="cannot read it as a media file"):
        probe_video(path)


@pytest.mark.parametrize(
    ("suffix", "codec", "pixel_format", "container_options"),
    [
        ("mp4", "libx264", "yuv420p", {"movflags": "+faststart"}),
        ("mp4", "libx264", "yuv420p", {}),
        ("avi", "mjpeg", "yuvj420p", {}),
    ],
    ids=["mp4-faststart", "mp4-index-at-end", "avi"],
)
@pytest.mark.parametrize(
    "cut_inside_packet", [True, False], ids=["inside-packet", "between-packets"]
)
def test_truncated_file_raises(
    tmp_path: Path,
    suffix: str,
    codec: str,
    pixel_format: str,
    container_options: dict[str, str],
    cut_inside_packet: bool,
) -> None:
    path = make_test_video(
        tmp_path / f"whole.{suffix}",
        num_frames=40,
        width=128,
        height=96,
        codec=codec,
        pixel_format=pixel_format,
        container_options=container_options,
    )
    with av.open(str(path)) as container:
        positions = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    position, size = positions[20]
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(path.read_bytes()[: position + (size // 2 if cut_inside_packet else 0)])

    with pytest.raises(VideoDecodeError, match=r"cut\." + suffix):
        read_video(cut)


def test_avi_cut_at_chunk_boundary_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_test_video(
        tmp_path / "whole.avi", num_frames=40, codec="mjpeg", pixel_format="yuvj420p"
    )
    with av.open(str(path)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size]
    cut = tmp_path / "cut.avi"
    # Each AVI chunk starts with an 8-byte header before the packet data.
    cut.write_bytes(path.read_bytes()[: positions[20] - 8])
    with caplog.at_level(logging.WARNING):
        info = probe_video(cut)
    assert info.num_frames == 20
    assert "the AVI header lists 40 frames but the timestamps end at frame 19" in caplog.text


def test_errors_pickle() -> None:
    error = TooFewFramesError("/x/y.mp4", "frames 5 to 9 were requested")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TooFewFramesError
    assert (copy.path, copy.reason) == (error.path, error.reason)
    assert str(copy) == "cannot read video /x/y.mp4: frames 5 to 9 were requested"


# Writing.


def test_write_round_trip(tmp_path: Path) -> None:
    frames = np.stack([frame_pattern(i, 128, 96) for i in range(20)])
    path = write_video(tmp_path / "out.mp4", frames, fps=20)
    decoded, info = read_video(path)
    assert (info.num_frames, info.fps) == (20, 20.0)
    assert (info.codec, info.pixel_format) == ("h264", "yuv420p")
    assert decoded.shape == frames.shape
    # 4:2:0 chroma limits this pattern to about 39 dB even at crf 0; crf 18 reaches about 39 dB.
    assert psnr(decoded, frames) > 36


def test_write_crf_sets_quality(tmp_path: Path) -> None:
    frames = np.stack([frame_pattern(i, 128, 96) for i in range(10)])
    fine = write_video(tmp_path / "fine.mp4", frames, fps=10, crf=10)
    coarse = write_video(tmp_path / "coarse.mp4", frames, fps=10, crf=40)
    assert fine.stat().st_size > coarse.stat().st_size
    assert psnr(read_video(fine)[0], frames) > psnr(read_video(coarse)[0], frames)


def test_write_chunks_and_ntsc_rate(tmp_path: Path) -> None:
    chunks = (np.stack([frame_pattern(i, 32, 16) for i in range(s, s + 5)]) for s in (0, 5, 10))
    path = write_video(tmp_path / "chunks.mp4", chunks, fps=30000 / 1001)
    info = probe_video(path)
    assert info.num_frames == 15
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-9)


def test_writer_is_faststart(tmp_path: Path) -> None:
    path = write_video(tmp_path / "fast.mp4", flat_frames([(0, 0, 0)] * 3), fps=10)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")


def test_writer_pads_odd_size(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = np.stack([frame_pattern(i, 65, 49) for i in range(4)])
    with caplog.at_level(logging.WARNING):
        path = write_video(tmp_path / "odd.mp4", frames, fps=10)
    decoded, info = read_video(path)
    assert (info.width, info.height) == (66, 50)
    assert "padded to 66x50" in caplog.text
    assert psnr(decoded[:, :49, :65], frames) > 32
    # The padding repeats the last row and column.
    assert psnr(decoded[:, 49, :65], decoded[:, 48, :65]) > 30
    assert psnr(decoded[:, :49, 65], decoded[:, :49, 64]) > 30


def test_writer_single_frames_and_size(tmp_path: Path) -> None:
    path = tmp_path / "single.mp4"
    with VideoWriter(path, fps=5, width=32, height=16) as writer:
        for i in range(3):
            writer.write(frame_pattern(i, 32, 16))
        with pytest.raises(ValueError, match="must be 16x32"):
            writer.write(frame_pattern(0, 16, 16))
    assert probe_video(path).num_frames == 3


def test_writer_exception_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "crash.mp4"
    with pytest.raises(RuntimeError, match="simulated crash"):
        with VideoWriter(path, fps=10) as writer:
            writer.write(flat_frames([(9, 9, 9)] * 4))
            raise RuntimeError("simulated crash")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_exception_keeps_old_file(tmp_path: Path) -> None:
    path = write_video(tmp_path / "keep.mp4", flat_frames([(9, 9, 9)] * 2), fps=10)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=10) as writer:
            writer.write(flat_frames([(200, 9, 9)] * 4))
            raise RuntimeError("simulated crash")
    assert path.read_bytes() == before


def test_writer_without_frames_raises(tmp_path: Path) -> None:
    path = tmp_path / "nothing.mp4"
    with pytest.raises(ValueError, match="no frames were written"):
        with VideoWriter(path, fps=10):
            pass
    assert not path.exists()


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        (np.zeros((2, 16, 16, 3), dtype=np.float32), TypeError),
        (np.zeros((2, 16, 16), dtype=np.uint8), ValueError),
        (np.zeros((2, 16, 16, 4), dtype=np.uint8), ValueError),
    ],
    ids=["float", "no-channels", "rgba"],
)
def test_writer_rejects_invalid_frames(tmp_path: Path, frames: np.ndarray, error: type) -> None:
    with pytest.raises(error):
        write_video(tmp_path / "bad.mp4", frames, fps=10)


@pytest.mark.parametrize(
    ("name", "fps"), [("clip.mkv", 10), ("clip.mp4", 0), ("clip.mp4", float("nan"))]
)
def test_writer_rejects_invalid_arguments(tmp_path: Path, name: str, fps: float) -> None:
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / name, fps=fps)


def test_video_info_defaults() -> None:
    info = VideoInfo("a.mp4", 10, 5.0, 64, 48, 0, "h264", "yuv420p", 2.0)
    assert info.frame_pts == ()
