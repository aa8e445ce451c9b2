"""Opening, decoding and seeking for ``video_io``, with FFmpeg errors mapped to ``VideoReadError``.

Frames are identified by their index in presentation order. A seek is trusted only when it lands
on an intact keyframe at or before the first requested frame, and when the decoded timestamps
then match the ones the probe recorded. Otherwise decoding restarts from the first frame, so a
seek does not change which frames a request returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

from larp_video.data.video_errors import (
    EmptyVideoError,
    NoVideoStreamError,
    VideoDecodeError,
    VideoNotFoundError,
    VideoReadError,
)
from larp_video.data.video_frames import display_rotation, frame_to_rgb, rotate_clockwise

logger = logging.getLogger(__name__)

# Demuxers whose seek lands on a keyframe from an index (mp4 sample tables, Matroska cues, the AVI
# idx1 chunk). Others (MPEG-PS, Ogg) search by timestamp and may land between keyframes.
_SEEKABLE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"})

# A seek can land past the requested frame, because B-frame reordering puts a keyframe's decode
# time before its presentation time. The next seek then starts this many frames earlier, and the
# distance doubles on each miss. After _SEEK_ATTEMPTS misses decoding restarts from frame 0.
_SEEK_BACKOFF_FRAMES = 16
_SEEK_ATTEMPTS = 3


@dataclass
class OpenVideo:
    """An open input container and the video stream that reading uses."""

    path: str
    container: InputContainer
    stream: VideoStream


@contextlib.contextmanager
def open_video(path: str | os.PathLike[str]) -> Iterator[OpenVideo]:
    """Open ``path`` and select its first video stream that is not cover art."""
    path = os.fspath(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise VideoNotFoundError(path, "the file does not exist") from None
    except OSError as error:
        raise VideoReadError(path, f"the file cannot be accessed: {error.strerror}") from error
    if not stat.S_ISREG(status.st_mode):
        raise VideoNotFoundError(path, "the path is not a regular file (a directory?)")
    if status.st_size == 0:
        raise EmptyVideoError(path, "the file is empty (0 bytes)")

    video = _open_container(path)
    try:
        yield video
    finally:
        video.container.close()


def _open_container(path: str) -> OpenVideo:
    try:
        container = av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            path, f"FFmpeg cannot read it as a media file ({_ffmpeg_message(error)})"
        ) from error
    except OSError as error:
        raise VideoReadError(path, f"the file cannot be opened: {error.strerror}") from error

    try:
        stream = _select_video_stream(path, container)
    except BaseException:
        container.close()
        raise
    stream.thread_type = "AUTO"
    return OpenVideo(path, container, stream)


def _reopen(video: OpenVideo) -> None:
    """Replace the container of ``video`` with a freshly opened one, positioned at the start."""
    video.container.close()
    fresh = _open_container(video.path)
    video.container = fresh.container
    video.stream = fresh.stream


def _select_video_stream(path: str, container: InputContainer) -> VideoStream:
    videos = [s for s in container.streams.video if not _is_cover_art(s)]
    if not videos:
        videos = list(container.streams.video)
    if not videos:
        streams = _describe_streams(container)
        raise NoVideoStreamError(path, f"the file has no video stream ({streams})")
    return videos[0]


def _is_cover_art(stream: VideoStream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _describe_streams(container: InputContainer) -> str:
    counts: dict[str, int] = {}
    for stream in container.streams:
        counts[stream.type] = counts.get(stream.type, 0) + 1
    if not counts:
        return "it has no streams at all"
    parts = [f"{n} {kind} stream{'s' if n > 1 else ''}" for kind, n in sorted(counts.items())]
    return "it has " + ", ".join(parts)


def _ffmpeg_message(error: av.error.FFmpegError) -> str:
    return error.strerror or str(error)


@dataclass
class DecodedFrameLog:
    """Counts decoded frames and records their timestamps and the first frame's properties."""

    count: int = 0
    first_frame: VideoFrame | None = None
    pts: list[int | None] = field(default_factory=list)

    def add(self, frame: VideoFrame) -> None:
        if self.first_frame is None:
            self.first_frame = frame
        self.pts.append(frame.pts)
        self.count += 1

    def increasing_pts(self) -> tuple[int, ...]:
        """Return the timestamps when every frame has one and they increase strictly, else ()."""
        if any(pts is None for pts in self.pts):
            return ()
        values = np.asarray(self.pts, dtype=np.int64)
        if len(values) > 1 and not np.all(np.diff(values) > 0):
            return ()
        return tuple(int(v) for v in values)

    def pts_span(self) -> int | None:
        """Return last minus first timestamp over frames that have one; None with fewer than 2."""
        known = [pts for pts in self.pts if pts is not None]
        if len(known) < 2 or len(known) < len(self.pts):
            return None
        return max(known) - min(known)


class FrameConverter:
    """Converts decoded frames to upright RGB at one fixed size.

    A stream that changes resolution midway is scaled back to the first frame's size, with one
    warning per file.
    """

    def __init__(self, path: str, width: int, height: int, rotation: int) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.rotation = rotation
        # Size of the decoded frame before rotation.
        if rotation in (90, 270):
            self._coded_size = (height, width)
        else:
            self._coded_size = (width, height)
        self._warned_resize = False
        # One swscale context per target format, reused for every frame of the stream.
        self._reformatters: dict = {}

    @classmethod
    def for_first_frame(cls, path: str, frame: VideoFrame | None) -> FrameConverter:
        assert frame is not None, "the log records the first frame before it is yielded"
        rotation = display_rotation(frame)
        width, height = frame.width, frame.height
        if rotation in (90, 270):
            width, height = height, width
        return cls(path, width, height, rotation)

    def convert(self, frame: VideoFrame) -> np.ndarray:
        """Return the frame as a C-contiguous uint8 array (H, W, 3)."""
        return frame_to_rgb(self._resized(frame), self.rotation, reformatters=self._reformatters)

    def convert_into(self, frame: VideoFrame, out: np.ndarray) -> None:
        """Write the frame into ``out`` (H, W, 3) without an intermediate rotated copy."""
        out[...] = rotate_clockwise(frame_to_rgb(self._resized(frame), reformatters=self._reformatters), self.rotation)

    def _resized(self, frame: VideoFrame) -> VideoFrame:
        if (frame.width, frame.height) == self._coded_size:
            return frame
        if not self._warned_resize:
            logger.warning(
                "%s changes resolution from %dx%d to %dx%d; frames are scaled to the first size",
                self.path,
                *self._coded_size,
                frame.width,
                frame.height,
            )
            self._warned_resize = True
        width, height = self._coded_size
        return frame.reformat(width=width, height=height)


def iter_decoded_frames(
    video: OpenVideo,
    start: int,
    stop: int | None,
    frame_pts: tuple[int, ...] = (),
    log: DecodedFrameLog | None = None,
) -> Iterator[tuple[int, VideoFrame]]:
    """Yield (index, frame) for the frames with start <= index < stop, in presentation order.

    ``frame_pts`` are the timestamps a probe recorded; with them decoding may seek, and every
    yielded frame's timestamp is checked against them. ``log`` records each decoded frame.
    """
    if start > 0 and frame_pts and video.container.format.name in _SEEKABLE_FORMATS:
        positioned = _seek_to_frame(video, start, frame_pts)
        if positioned is not None:
            yield from _checked_range(video.path, positioned, start, stop, frame_pts, log)
            return
        logger.debug(
            "%s: no exact seek to frame %d; decoding from the first frame", video.path, start
        )
        _reopen(video)

    frames = _decode(video, from_start=True)
    yield from _checked_range(video.path, frames, 0, stop, frame_pts, log, skip=start)


def _checked_range(
    path: str,
    frames: Iterator[VideoFrame],
    first_index: int,
    stop: int | None,
    frame_pts: tuple[int, ...],
    log: DecodedFrameLog | None,
    skip: int = 0,
) -> Iterator[tuple[int, VideoFrame]]:
    """Number ``frames`` from ``first_index`` and yield those from ``skip`` up to ``stop``."""
    for index, frame in enumerate(frames, start=first_index):
        if log is not None:
            log.add(frame)
        if index >= skip:
            if frame_pts and (index >= len(frame_pts) or frame.pts != frame_pts[index]):
                expected = frame_pts[index] if index < len(frame_pts) else "no such frame"
                raise VideoDecodeError(
                    path,
                    f"frame {index} has timestamp {frame.pts} but `info` lists {expected}; "
                    "the file changed since it was probed or `info` belongs to another file, "
                    "probe it again",
                )
            yield index, frame
        if stop is not None and index + 1 >= stop:
            return


def _seek_to_frame(
    video: OpenVideo, start: int, frame_pts: tuple[int, ...]
) -> Iterator[VideoFrame] | None:
    """Seek so that the returned iterator's first frame is frame ``start``; None when unsafe."""
    _prime_decoder(video)
    target = frame_pts[start]
    backoff = 0
    for _ in range(_SEEK_ATTEMPTS):
        seek_index = start - backoff
        if seek_index <= 0:
            return None
        video.container.seek(frame_pts[seek_index], stream=video.stream, backward=True)

        frames = _decode(video)
        first = next(frames, None)
        if first is None:
            return None
        is_keyframe = first.key_frame or first.pict_type == PictureType.I
        if first.pts is None or first.pts > target or not is_keyframe or first.is_corrupt:
            # Landed past the target, or on a frame that needs references from before the seek.
            backoff = max(_SEEK_BACKOFF_FRAMES, 2 * backoff)
            continue

        skipped = 0
        frame: VideoFrame | None = first
        while frame is not None and frame.pts is not None and frame.pts < target:
            skipped += 1
            frame = next(frames, None)
            if frame is not None and frame.is_corrupt:
                return None
        if frame is None or frame.pts != target:
            return None
        logger.debug(
            "%s: seeked to frame %d (pts %d), decoded %d earlier frames",
            video.path,
            start,
            target,
            skipped,
        )
        return _prepend(frame, frames)
    return None


def _prime_decoder(video: OpenVideo) -> None:
    """Decode the stream's first packet, whose side information later keyframes may rely on.

    FFmpeg's H.264 decoder reads the x264 version from an SEI message in the first packet and
    uses it to work around bugs of old x264 builds. Without it, keyframes of such files decode
    as corrupt green frames after a seek (seen on the 4:4:4 demo clip, assets/demo/cockatoo.mp4).
    """
    try:
        for packet in video.container.demux(video.stream):
            if packet.size:
                video.stream.decode(packet)
                return
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            video.path, f"decoding the first packet failed: {_ffmpeg_message(error)}"
        ) from error


def _prepend(frame: VideoFrame, rest: Iterator[VideoFrame]) -> Iterator[VideoFrame]:
    yield frame
    yield from rest


def _decode(video: OpenVideo, from_start: bool = False) -> Iterator[VideoFrame]:
    """Decode the video stream from the demuxer's position, raising VideoDecodeError on damage.

    ``from_start`` means that demuxing began at the first packet, so a complete pass can be
    checked against the packet counts in the container's index and header.
    """
    decoded = 0
    packets = 0
    concealed = 0
    last_pts = None
    try:
        for packet in video.container.demux(video.stream):
            if packet.is_corrupt:
                raise VideoDecodeError(
                    video.path,
                    f"the packet at byte {packet.pos} is incomplete or corrupt after "
                    f"{decoded} decoded frames (the file is probably truncated)",
                )
            # The demuxer ends with an empty packet that only flushes the decoder. Other empty
            # packets count: AVI stores a repeated frame as an empty chunk.
            if packet.size or packet.dts is not None:
                packets += 1
            for frame in packet.decode():
                decoded += 1
                concealed += frame.is_corrupt
                if frame.pts is not None:
                    last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
                yield frame
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            video.path,
            f"decoding failed after {decoded} frames: {_ffmpeg_message(error)} (the file is "
            "probably truncated or corrupt)",
        ) from error

    if concealed:
        logger.warning(
            "%s: FFmpeg concealed decoding errors in %d of %d frames",
            video.path,
            concealed,
            decoded,
        )
    if not from_start:
        return
    # A file cut between two packets ends early without any decoding error. mp4 and AVI index
    # every packet, so missing packets show there.
    # NOTE: Matroska/WebM, Ogg and MPEG-PS files cut between two packets have no such index, so
    # they read as shorter videos without an error.
    indexed = len(video.stream.index_entries)
    if packets < indexed:
        raise VideoDecodeError(
            video.path,
            f"the file ends after {packets} of the {indexed} packets its index lists "
            "(the file is truncated)",
        )
    # An AVI cut with its index gone shows only in the header: it gives the length in frame
    # slots, and AVI timestamps count those slots (empty slots repeat the previous frame).
    header_frames = video.stream.frames
    is_avi = video.container.format.name == "avi"
    if is_avi and last_pts is not None and last_pts + 1 < header_frames:
        logger.warning(
            "%s: the AVI header lists %d frames but the timestamps end at frame %d; the file "
            "may be truncated",
            video.path,
            header_frames,
            last_pts,
        )
