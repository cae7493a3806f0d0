"""Opening media files with PyAV (the ``av`` package: FFmpeg's libraries, bundled in its wheels), which
reads what OpenCV cannot: subtitle streams and audio. PyAV is an optional dependency, installed by the
``transcripts`` extra (``pip install "maxsim[transcripts]"``).

Times of subtitle cues and audio samples are put on the time line the visual segments use: seconds
after the presentation time of the first video stream's start (OpenCV's position), or after the
container's start when there is no video stream.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

INSTALL_HINT = 'install PyAV with `pip install "maxsim[transcripts]"` (or `pip install av`)'


class MediaError(Exception):
    """A media file whose subtitles or audio cannot be read: missing, not a media file, no such stream."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep it picklable (worker processes)
        return (type(self), (self.path, self.reason))


def require_av() -> Any:
    """The ``av`` module; ImportError saying how to install it when it is missing."""
    try:
        import av
    except ImportError as e:
        raise ImportError(f"reading subtitle streams and audio needs PyAV: {INSTALL_HINT}") from e
    return av


def open_media(path: str | os.PathLike) -> Any:
    """An open PyAV input container for ``path`` (close it, or use it as a context manager). Raises
    :class:`MediaError` naming the file when it is missing or not a media file."""
    av = require_av()
    p = Path(path)
    if not p.is_file():
        raise MediaError(p, "no such file" if not p.exists() else "not a regular file")
    try:
        return av.open(str(p), "r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(p, f"cannot be opened as a media file ({e})") from e


def timeline_origin(container: Any) -> float:
    """Seconds to subtract from a stream's presentation times to put them on the visual time line:
    the first video stream's start time, else the container's, else 0."""
    for stream in container.streams.video:
        if stream.start_time is not None and stream.time_base is not None:
            return float(stream.start_time * stream.time_base)
    if container.start_time is not None:
        return container.start_time / 1_000_000  # AV_TIME_BASE
    return 0.0


def language_of(stream: Any) -> str | None:
    """The language tag a stream carries in its metadata (None when absent)."""
    meta = getattr(stream, "metadata", None) or {}
    lang = meta.get("language") or meta.get("LANGUAGE")
    return str(lang) if lang else None


def disposition_flags(stream: Any) -> set[str]:
    """The stream's disposition flags that matter for choosing it (``default``, ``forced``,
    ``hearing_impaired``), by name."""
    disp = getattr(stream, "disposition", None)
    flags: set[str] = set()
    if disp is None:
        return flags
    for name in ("default", "forced", "hearing_impaired"):
        flag = getattr(type(disp), name, None)
        try:
            if flag is not None and disp & flag:
                flags.add(name)
        except TypeError:  # an older PyAV without flag arithmetic on dispositions
            continue
    return flags
