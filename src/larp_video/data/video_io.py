"""Video reading and writing on PyAV (FFmpeg), for any container and codec FFmpeg decodes.

Frames come out as uint8 RGB arrays (T, H, W, 3), upright and in presentation order. Frame
counts and frame rates are measured by decoding, never taken from headers (WebM headers report 0
frames). Pixel formats and rotation follow the rule in ``larp_video.data.video_frames``:

- any pixel format becomes 8-bit RGB: 10-, 12- and 16-bit samples are scaled down, gray is
  replicated to three channels, limited-range YUV is expanded to full-range RGB with the tagged
  matrix (BT.601 when untagged), and alpha is dropped (colours as stored, not composited);
- the container's display matrix is applied, so portrait phone videos come out portrait;
- frames keep the stored pixel grid: a non-square sample aspect ratio is not corrected.

Random access: ``probe_video`` decodes the file once without RGB conversion and returns a
``VideoInfo`` with every frame's timestamp. Passing that ``info`` to ``read_video`` or
``iter_video`` lets them seek to the keyframe before the first requested frame (mp4/mov,
Matroska/WebM and AVI) and decode only up to the last requested frame. Without ``info`` the file
is decoded from its first frame.

Errors are ``VideoReadError`` subclasses (``larp_video.data.video_errors``) whose message names
the file and the reason. Writing is in ``larp_video.data.video_writer``; this module re-exports it.

Dimension letters: T frames, H height, W width (as displayed), 3 RGB channels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from av.video.frame import VideoFrame

from larp_video.data.video_decoding import (
    DecodedFrameLog,
    FrameConverter,
    iter_decoded_frames,
    open_video,
)
from larp_video.data.video_errors import (
    EmptyVideoError,
    NoVideoStreamError,
    TooFewFramesError,
    VideoDecodeError,
    VideoNotFoundError,
    VideoReadError,
)
from larp_video.data.video_frames import display_rotation, frame_to_rgb
from larp_video.data.video_writer import VideoWriter, write_video

__all__ = [
    "EmptyVideoError",
    "NoVideoStreamError",
    "TooFewFramesError",
    "VideoDecodeError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoReadError",
    "VideoWriter",
    "frame_to_rgb",
    "iter_video",
    "probe_video",
    "read_video",
    "write_video",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# A measured frame rate within this relative distance of the header rate is replaced by the
# header rate, which removes the rounding of millisecond timestamps (Matroska stores 29.97 fps
# as 33 and 34 ms steps).
_HEADER_RATE_TOLERANCE = Fraction(1, 100)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video file, measured by decoding every frame once."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    pixel_format: str
    duration: float
    # Presentation timestamps in the stream's time base, one per frame in order; empty when some
    # frame has none or they do not increase strictly. read_video seeks only when they exist.
    frame_pts: tuple[int, ...] = field(default=(), repr=False, compare=False)


def probe_video(path: PathLike) -> VideoInfo:
    """Decode every frame of ``path`` (without RGB conversion) to count frames and measure fps.

    Raises a ``VideoReadError`` subclass when the file cannot be used.
    """
    log = DecodedFrameLog()
    with open_video(path) as video:
        for _ in iter_decoded_frames(video, start=0, stop=None, log=log):
            pass
        return _info_from_log(video.path, video.stream, log)


def read_video(
    path: PathLike,
    start_frame: int = 0,
    num_frames: int | None = None,
    *,
    info: VideoInfo | None = None,
) -> tuple[np.ndarray, VideoInfo]:
    """Read frames [start_frame, start_frame + num_frames) of ``path`` as uint8 RGB (T, H, W, 3).

    ``num_frames=None`` reads to the end. With ``info`` from ``probe_video``, decoding seeks to
    the keyframe before ``start_frame`` where the container allows it, and it stops after the
    last requested frame. Without ``info`` the whole file is decoded once, because the returned
    ``VideoInfo`` needs the frame count. Only requested frames are converted to RGB, so memory
    use is the requested frames plus one decoded frame.

    Raises ``TooFewFramesError`` when the range goes past the end, and other ``VideoReadError``
    subclasses when the file cannot be used.
    """
    _check_request(start_frame, num_frames)

    if info is not None:
        stop = _checked_stop(os.fspath(path), info.num_frames, start_frame, num_frames)
        frames = np.empty((stop - start_frame, info.height, info.width, 3), dtype=np.uint8)
        with open_video(path) as video:
            converter = FrameConverter(video.path, info.width, info.height, info.rotation)
            count = 0
            for index, frame in iter_decoded_frames(
                video, start=start_frame, stop=stop, frame_pts=info.frame_pts
            ):
                converter.convert_into(frame, frames[index - start_frame])
                count += 1
        if count < len(frames):
            raise TooFewFramesError(
                video.path,
                f"`info` lists {info.num_frames} frames but decoding ended after "
                f"{start_frame + count}; the file changed since it was probed, probe it again",
            )
        return frames, info

    # Without info, one pass decodes the whole file: it converts the requested frames and
    # counts the rest for VideoInfo.
    log = DecodedFrameLog()
    kept: list[np.ndarray] = []
    stop_request = None if num_frames is None else start_frame + num_frames
    with open_video(path) as video:
        converter: FrameConverter | None = None
        for index, frame in iter_decoded_frames(video, start=0, stop=None, log=log):
            if index < start_frame or (stop_request is not None and index >= stop_request):
                continue
            if converter is None:
                converter = FrameConverter.for_first_frame(video.path, log.first_frame)
            kept.append(converter.convert(frame))
        info = _info_from_log(video.path, video.stream, log)

    _checked_stop(info.path, info.num_frames, start_frame, num_frames)
    return _stack_frames(kept, info.height, info.width), info


def iter_video(
    path: PathLike,
    chunk_frames: int,
    *,
    start_frame: int = 0,
    max_frames: int | None = None,
    info: VideoInfo | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 RGB chunks (t, H, W, 3) of ``chunk_frames`` frames; the last may be shorter.

    Streams from ``start_frame`` to the end, or at most ``max_frames`` frames. Memory use is one
    chunk plus one decoded frame. ``info`` from ``probe_video`` lets decoding seek to
    ``start_frame``. Raises ``TooFewFramesError`` when ``start_frame`` is at or past the end.
    """
    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ValueError(f"chunk_frames must be a positive int, got {chunk_frames!r}")
    _check_request(start_frame, max_frames, count_name="max_frames")

    stop = None if max_frames is None else start_frame + max_frames
    if info is not None:
        if start_frame >= info.num_frames:
            raise TooFewFramesError(
                os.fspath(path),
                f"start_frame {start_frame} is past the last frame (the video has "
                f"{info.num_frames} frames); pass start_frame < {info.num_frames}",
            )
        stop = info.num_frames if stop is None else min(stop, info.num_frames)

    log = DecodedFrameLog()
    yielded = 0
    with open_video(path) as video:
        converter = None
        if info is not None:
            converter = FrameConverter(video.path, info.width, info.height, info.rotation)
        chunk: np.ndarray | None = None
        filled = 0
        for _, frame in iter_decoded_frames(
            video,
            start=start_frame,
            stop=stop,
            frame_pts=info.frame_pts if info is not None else (),
            log=log,
        ):
            if converter is None:
                converter = FrameConverter.for_first_frame(video.path, log.first_frame)
            if chunk is None:
                # (chunk_frames, H, W, 3), filled frame by frame.
                chunk = np.empty(
                    (chunk_frames, converter.height, converter.width, 3), dtype=np.uint8
                )
                filled = 0
            converter.convert_into(frame, chunk[filled])
            filled += 1
            yielded += 1
            if filled == chunk_frames:
                yield chunk
                chunk = None

        if chunk is not None:
            yield chunk[:filled]

    if log.count == 0:
        raise EmptyVideoError(video.path, "the video stream has no decodable frames")
    if yielded == 0:
        raise TooFewFramesError(
            video.path,
            f"start_frame {start_frame} is past the last frame (the video has {log.count} "
            f"frames); pass start_frame < {log.count}",
        )
    if stop is not None and info is not None and start_frame + yielded < stop:
        raise TooFewFramesError(
            video.path,
            f"`info` lists {info.num_frames} frames but decoding ended after "
            f"{start_frame + yielded}; the file changed since it was probed, probe it again",
        )


def _check_request(start_frame: int, count: int | None, count_name: str = "num_frames") -> None:
    if isinstance(start_frame, bool) or not isinstance(start_frame, int) or start_frame < 0:
        raise ValueError(f"start_frame must be an int >= 0, got {start_frame!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"{count_name} must be None or an int >= 1, got {count!r}")


def _checked_stop(path: str, available: int, start_frame: int, num_frames: int | None) -> int:
    """Return the end of the requested range, or raise TooFewFramesError when it is past the end."""
    stop = available if num_frames is None else start_frame + num_frames
    if start_frame >= available or stop > available:
        last = "end" if num_frames is None else stop - 1
        raise TooFewFramesError(
            path,
            f"frames {start_frame} to {last} were requested but the video has {available} "
            f"frames (0 to {available - 1}); request frames below {available}",
        )
    return stop


def _stack_frames(frames: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Stack (H, W, 3) frames into (T, H, W, 3) while releasing the list item by item.

    ``np.empty`` pages are committed on first write, so peak memory stays near one copy.
    """
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for index in range(len(frames)):
        out[index] = frames[index]
        frames[index] = None  # type: ignore[call-overload]
    return out


def _info_from_log(path: str, stream, log: DecodedFrameLog) -> VideoInfo:
    if log.count == 0 or log.first_frame is None:
        raise EmptyVideoError(path, "the video stream has no decodable frames")

    first: VideoFrame = log.first_frame
    rotation = display_rotation(first)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width

    fps = _measure_fps(path, stream, log)
    return VideoInfo(
        path=path,
        num_frames=log.count,
        fps=fps,
        width=width,
        height=height,
        rotation=rotation,
        codec=stream.codec_context.name,
        pixel_format=first.format.name,
        duration=log.count / fps,
        frame_pts=log.increasing_pts(),
    )


def _measure_fps(path: str, stream, log: DecodedFrameLog) -> float:
    """Return the average frame rate of the decoded timestamps, or the header rate as a fallback.

    The fallback serves 1-frame videos and streams without timestamps.
    """
    header_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    span = log.pts_span()
    if span is not None and span > 0 and stream.time_base:
        measured = Fraction(log.count - 1) / (span * stream.time_base)
        if header_rate and abs(measured - header_rate) <= header_rate * _HEADER_RATE_TOLERANCE:
            return float(header_rate)
        return float(measured)

    if header_rate:
        return float(header_rate)
    raise VideoDecodeError(
        path, "the frame rate is unknown: frames carry no timestamps and the header has no rate"
    )
