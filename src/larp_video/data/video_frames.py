"""Conversion of decoded PyAV frames to upright 8-bit RGB arrays.

Pixel-format rule (every decoded format ends as uint8 RGB, shape (H, W, 3)):

- YUV is converted with the matrix the frame is tagged with (BT.601 when untagged, which is
  FFmpeg's default). Limited-range YUV (luma 16-235 at 8 bits) is expanded to full-range RGB
  (0-255); full-range ("JPEG", yuvj*) YUV is converted as is.
- Formats with more than 8 bits per sample (10-, 12-, 16-bit YUV, RGB or gray) are scaled down
  to 8 bits, so the maximum code maps to 255.
- Gray is replicated to three channels. Gray tagged limited-range is expanded like YUV luma;
  untagged gray counts as full range, as FFmpeg's swscale treats it.
- Alpha is dropped: the colour channels come out as stored, neither premultiplied nor
  composited onto a background.
- Palette formats (pal8) are looked up in their palette.

Rotation: the display matrix that a container stores (the mp4 ``rotate`` tag, a phone's
portrait flag) is applied, so frames come out as a player shows them. Rotations are multiples of
90 degrees; other angles are rounded to the nearest multiple and mirroring is ignored, each with
a warning.
"""

from __future__ import annotations

import logging
import math

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter

logger = logging.getLogger(__name__)

# Subsampled YUV formats that swscale converts to rgb24 directly and correctly. FFmpeg 8's
# swscale (libswscale 9.5, bundled with PyAV 18) darkens the others by about 1% on the direct
# path (limited-range white comes out as 253), so those are first upsampled to 4:4:4 at 16 bits.
_DIRECT_SUBSAMPLED_FORMATS = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuva420p"}
)
_EXACT_INTERMEDIATE_FORMAT = "yuv444p16le"

_LIMITED_RANGE = int(av.video.reformatter.ColorRange.MPEG)


def display_rotation(frame: VideoFrame) -> int:
    """Return the clockwise rotation (0, 90, 180 or 270) that shows ``frame`` upright.

    The value comes from the frame's display matrix side data; 0 when it has none. FFmpeg's
    display matrix angle is counterclockwise, so the clockwise rotation is its negative.
    """
    matrix = _display_matrix(frame)
    if matrix is None:
        return 0

    # The top-left 2x2 block of the 16.16 fixed-point matrix contains rotation and scale.
    a, b, c, d = float(matrix[0]), float(matrix[1]), float(matrix[3]), float(matrix[4])
    if a * d - b * c < 0:
        logger.warning("ignored the mirroring in a display matrix %s", list(matrix))

    # FFmpeg's av_display_rotation_get returns the negative of this angle, counterclockwise.
    scale_x = math.hypot(a, c)
    scale_y = math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        logger.warning("ignored a degenerate display matrix %s", list(matrix))
        return 0
    clockwise = math.degrees(math.atan2(b / scale_y, a / scale_x))

    rounded = round(clockwise / 90) * 90
    if abs(rounded - clockwise) > 1:
        logger.warning(
            "rounded a display rotation of %.1f degrees to %d degrees", clockwise, rounded
        )
    return rounded % 360


def _display_matrix(frame: VideoFrame) -> np.ndarray | None:
    for side_data in frame.side_data:
        if side_data.type == SideDataType.DISPLAYMATRIX:
            return np.frombuffer(bytes(side_data), dtype=np.int32)[:9]
    return None


def frame_to_rgb(
    frame: VideoFrame, rotation: int = 0, reformatters: dict[str, VideoReformatter] | None = None
) -> np.ndarray:
    """Convert a decoded frame to a uint8 RGB array by the module's pixel-format rule.

    ``rotation`` is the clockwise angle in degrees (a multiple of 90) that is applied afterwards.
    ``reformatters`` is a dict that this function fills with one swscale context per target
    format. Passing the same dict for every frame of a stream reuses the contexts, which makes
    the conversion 10 to 100 times faster than ``VideoFrame.to_ndarray``, whose new context per
    frame dominates the cost for small frames.
    Returns a C-contiguous array (H, W, 3) with H and W as displayed.
    """
    rgb = _to_rgb(frame, reformatters)
    return np.ascontiguousarray(rotate_clockwise(rgb, rotation))


def rotate_clockwise(image: np.ndarray, rotation: int) -> np.ndarray:
    """Return a view of ``image`` (H, W, ...) rotated clockwise by ``rotation`` degrees."""
    if rotation % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    # np.rot90 turns counterclockwise for positive k.
    return np.rot90(image, k=-(rotation // 90) % 4)


def _to_rgb(frame: VideoFrame, reformatters: dict[str, VideoReformatter] | None = None) -> np.ndarray:
    video_format = frame.format
    if _is_gray(video_format):
        return _gray_to_rgb(frame)

    subsampled = (
        video_format.chroma_width() != video_format.width
        or video_format.chroma_height() != video_format.height
    )
    if (
        subsampled
        and not video_format.is_rgb
        and video_format.name not in _DIRECT_SUBSAMPLED_FORMATS
    ):
        frame = _reformat(frame, _EXACT_INTERMEDIATE_FORMAT, reformatters)
    return _reformat(frame, "rgb24", reformatters).to_ndarray()


def _reformat(frame: VideoFrame, pixel_format: str, reformatters: dict[str, VideoReformatter] | None) -> VideoFrame:
    if reformatters is None:
        return frame.reformat(format=pixel_format)
    reformatter = reformatters.setdefault(pixel_format, VideoReformatter())
    return reformatter.reformat(frame, format=pixel_format)


def _is_gray(video_format: av.VideoFormat) -> bool:
    # One component is luma only (gray*), two are luma plus alpha (ya8, ya16); 1-bit monob and
    # monow go through swscale like colour formats.
    components = video_format.components
    return (
        len(components) in (1, 2)
        and not video_format.is_rgb
        and not video_format.has_palette
        and components[0].bits >= 8
    )


def _gray_to_rgb(frame: VideoFrame) -> np.ndarray:
    bits = frame.format.components[0].bits
    if frame.format.name not in av.video.frame.supported_np_pix_fmts:
        # ya8 and ya16 have no numpy view; swscale drops their alpha plane and keeps the levels.
        frame = frame.reformat(format="gray" if bits <= 8 else "gray16le")
        bits = 8 if bits <= 8 else 16

    levels = frame.to_ndarray()
    if np.issubdtype(levels.dtype, np.floating):
        values = levels.astype(np.float32) * 255.0
    elif frame.color_range == _LIMITED_RANGE:
        # Limited range puts black at 16 and white at 235, scaled by 2**(bits - 8).
        values = (levels.astype(np.float32) / 2 ** (bits - 8) - 16.0) * (255.0 / 219.0)
    else:
        values = levels.astype(np.float32) * (255.0 / (2**bits - 1))

    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
