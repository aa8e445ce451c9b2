"""Writing uint8 RGB frames to H.264 mp4 files, atomically.

Files are H.264 (libx264, constant rate factor ``crf``) in yuv420p, tagged BT.709 limited range,
with the index at the front (``movflags=+faststart``) so players can start before the end arrives.
Frames go to a hidden temporary file in the target folder, which is renamed to the final name on
a clean close. An exception inside ``with VideoWriter(...)`` deletes the temporary file, so a
crash does not leave a truncated file under the final name (a killed process can leave the hidden
``.<name>.<hex>.tmp`` file behind).

Odd sizes: yuv420p stores colour at half resolution, so H.264 needs an even width and height. An
odd width or height is padded by one pixel that repeats the last column or row, so the file is
one pixel wider or taller than the frames given (a warning says so).

Dimension letters: T frames, H height, W width, 3 RGB channels.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

logger = logging.getLogger(__name__)

MP4_SUFFIXES = (".mp4", ".m4v")
# Frame rates are stored as fractions with a denominator up to 1001, which keeps NTSC rates
# exact (29.97 fps is 30000/1001).
_MAX_RATE_DENOMINATOR = 1001
# FFmpeg's codes for BT.709 primaries, transfer and matrix (AVCOL_PRI/TRC/SPC_BT709).
_BT709 = 1


class VideoWriter:
    """Context manager that encodes uint8 RGB frames into an H.264 mp4 file.

    ``width`` and ``height`` fix the frame size; by default the first frame sets it. ``crf`` is
    libx264's constant rate factor from 0 (lossless in YUV) to 51: lower values give higher
    quality and larger files, and libx264's default is 23. ``preset`` is libx264's speed preset
    (ultrafast ... veryslow): "veryfast" encodes about four times faster than libx264's default
    "medium" at the same crf, for somewhat larger files.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        width: int | None = None,
        height: int | None = None,
        crf: int = 18,
        preset: str = "veryfast",
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in MP4_SUFFIXES:
            raise ValueError(
                f"VideoWriter writes H.264 in mp4; give {self.path} one of the suffixes "
                f"{', '.join(MP4_SUFFIXES)}"
            )
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"the folder {self.path.parent} does not exist; create it before writing "
                f"{self.path}"
            )
        if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not (
            math.isfinite(fps) and fps > 0
        ):
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        if not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an int from 0 to 51, got {crf!r}")
        for name, value in (("width", width), ("height", height)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")

        self.fps = fps
        self.width = width
        self.height = height
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._rate = Fraction(fps).limit_denominator(_MAX_RATE_DENOMINATOR)
        self._temporary_path = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._closed = False

    def __del__(self) -> None:
        # A writer dropped without close() never renames its file; remove the hidden temporary.
        if not getattr(self, "_closed", True) and getattr(self, "_container", None) is not None:
            logger.warning(
                "a VideoWriter for %s was never closed; its frames are discarded", self.path
            )
            self.abort()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frames: np.ndarray) -> None:
        """Encode a uint8 RGB frame (H, W, 3) or a chunk of frames (t, H, W, 3)."""
        if self._closed:
            raise RuntimeError(f"the VideoWriter for {self.path} is closed")
        array = np.asarray(frames)
        if array.ndim == 3:
            array = array[None]
        self._check_frames(array)
        if self._container is None:
            self._open(width=array.shape[2], height=array.shape[1])

        assert self._stream is not None and self._container is not None
        for image in array:
            frame = av.VideoFrame.from_ndarray(self._pad_to_even(image), format="rgb24")
            frame = frame.reformat(
                format="yuv420p",
                dst_colorspace=Colorspace.ITU709,
                dst_color_range=ColorRange.MPEG,
            )
            frame.pts = self.frames_written
            frame.time_base = 1 / self._rate
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and rename it to its final name.

        Raises ValueError when no frame was written; then no file is created.
        """
        if self._closed:
            return self.path
        if self._container is None or self._stream is None:
            self._closed = True
            raise ValueError(f"no frames were written to {self.path}; nothing was saved")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self._temporary_path, self.path)
        self._closed = True
        logger.debug("wrote %d frames to %s", self.frames_written, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; the final name is left untouched."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError) as error:
                logger.debug("closing the aborted %s failed: %s", self._temporary_path, error)
            self._container = None
        self._temporary_path.unlink(missing_ok=True)

    def _check_frames(self, array: np.ndarray) -> None:
        if array.dtype != np.uint8:
            raise TypeError(
                f"frames must be uint8 RGB, got dtype {array.dtype}; convert floats in [0, 1] "
                "with (x * 255).round().clip(0, 255).astype(np.uint8)"
            )
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(
                f"frames must have shape (H, W, 3) or (T, H, W, 3), got {array.shape}"
            )
        height, width = array.shape[1:3]
        expected = (self.height or height, self.width or width)
        if (height, width) != expected:
            raise ValueError(
                f"frames of {self.path} must be {expected[0]}x{expected[1]} (HxW) like the "
                f"first frame or the size given to VideoWriter, got {height}x{width}"
            )

    def _open(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        padded_width, padded_height = width + width % 2, height + height % 2
        if (padded_width, padded_height) != (width, height):
            logger.warning(
                "%s: H.264 yuv420p needs even sizes, so %dx%d frames are padded to %dx%d by "
                "repeating the last column or row",
                self.path,
                width,
                height,
                padded_width,
                padded_height,
            )

        self._container = av.open(
            str(self._temporary_path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        stream = self._container.add_stream("libx264", rate=self._rate)
        stream.width, stream.height, stream.pix_fmt = padded_width, padded_height, "yuv420p"
        stream.codec_context.color_primaries = _BT709
        stream.codec_context.color_trc = _BT709
        stream.codec_context.colorspace = _BT709
        stream.codec_context.color_range = int(ColorRange.MPEG)
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream

    def _pad_to_even(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if width % 2 == 0 and height % 2 == 0:
            return np.ascontiguousarray(image)
        return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 18,
) -> Path:
    """Write uint8 RGB frames to an H.264 mp4 file atomically and return its path.

    ``frames`` is an array (T, H, W, 3) or an iterable of chunks (t, H, W, 3), e.g. from
    ``iter_video``, so long videos never sit in memory at once.
    """
    chunks: Iterable[np.ndarray] = [frames] if isinstance(frames, np.ndarray) else frames
    with VideoWriter(path, fps, crf=crf) as writer:
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 4:
                raise ValueError(
                    f"each chunk must have shape (t, H, W, 3), got {chunk.shape}; pass a "
                    "single video as one (T, H, W, 3) array"
                )
            writer.write(chunk)
    return writer.path
