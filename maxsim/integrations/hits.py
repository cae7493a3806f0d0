"""What a retrieved moment looks like to a text framework: a short text and a metadata dict."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from maxsim.types import Hit

# Keys a retriever puts in each document's / node's metadata (``thumbnail`` only when asked and present).
METADATA_KEYS = (
    "video",
    "video_name",
    "start",
    "end",
    "score",
    "best_time",
    "segment_id",
    "deep_link",
    "thumbnail",
)


def deep_link(video: str | os.PathLike, start: float, end: float) -> str:
    """A ``file://`` URI of ``video`` with a Media Fragments time range: ``file:///v.mp4#t=12.000,22.000``.

    Browsers and players such as VLC/mpv that honour ``#t=`` open the file at ``start``.
    """
    p = Path(video)
    return f"{(p if p.is_absolute() else p.resolve()).as_uri()}#t={start:.3f},{end:.3f}"


def thumbnail_data_uri(jpeg: bytes | None) -> str | None:
    """A JPEG as a ``data:image/jpeg;base64,...`` URI (None stays None)."""
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def clock(seconds: float) -> str:
    """``seconds`` as ``[h:]mm:ss.s``."""
    m, s = divmod(max(0.0, float(seconds)), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m:02d}:{s:04.1f}"


def hit_text(hit: Hit) -> str:
    """A one-line description of a hit, used as the document text (video segments have no text)."""
    return (
        f"{Path(hit.video).name} {clock(hit.start)}-{clock(hit.end)} "
        f"(best frame at {clock(hit.best_time)}, score {hit.score:.3f})"
    )


def hit_metadata(hit: Hit, thumbnail: bool = True) -> dict[str, Any]:
    """The metadata of a hit: plain JSON-serialisable values (the thumbnail as a data URI)."""
    md: dict[str, Any] = {
        "video": hit.video,
        "video_name": Path(hit.video).name,
        "start": float(hit.start),
        "end": float(hit.end),
        "score": float(hit.score),
        "best_time": float(hit.best_time),
        "segment_id": int(hit.segment_id),
        "deep_link": deep_link(hit.video, hit.start, hit.end),
    }
    if thumbnail and hit.thumbnail:
        md["thumbnail"] = thumbnail_data_uri(hit.thumbnail)
    return md


def check_k(k: Any) -> int:
    """``k`` as a positive int, or a ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k
