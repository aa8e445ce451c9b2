"""Exceptions raised when a video file cannot serve a request.

Every error is a ``VideoReadError`` with the file's ``path`` and a plain ``reason``, and its message
reads ``cannot read video <path>: <reason>``. Dataset loaders catch ``VideoReadError`` to skip a
file; the subclasses tell the causes apart. The errors pickle, so they cross DataLoader workers.
"""

from __future__ import annotations

import os


class VideoReadError(Exception):
    """A video file that cannot be used, with the file's path and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[VideoReadError], tuple[str, str]]:
        # The default reduction passes only the message to __init__, which takes two arguments.
        return type(self), (self.path, self.reason)


class VideoNotFoundError(VideoReadError):
    """The path does not exist or is not a file."""


class EmptyVideoError(VideoReadError):
    """The file has 0 bytes, or its video stream has no decodable frame."""


class NoVideoStreamError(VideoReadError):
    """The file is a media file without a video stream, e.g. an audio-only file."""


class VideoDecodeError(VideoReadError):
    """The file is not a media file FFmpeg can read, or it is truncated or corrupt."""


class TooFewFramesError(VideoReadError):
    """The request asks for frames past the end of the video."""
