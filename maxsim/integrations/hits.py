"""What a retrieved moment looks like to a text framework: a short text and a metadata dict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maxsim.types import Hit, thumbnail_data_uri

__all__ = ["check_k", "clock", "deep_link", "hit_metadata", "hit_text", "thumbnail_data_uri"]

def deep_link(video: str | os.PathLike, start: float, end: float) -> str:
    """A ``file://`` URI of ``video`` with a Media Fragments time range: ``file:///v.mp4#t=12.000,22.000``.

    Browsers and players such as VLC/mpv that honour ``#t=`` open the file at ``start``.
    """
    p = Path(video)
    return f"{(p if p.is_absolute() else p.resolve()).as_uri()}#t={start:.3f},{end:.3f}"


def clock(seconds: float) -> str:
    """``seconds`` as ``[h:]mm:ss.s``."""
    m, s = divmod(max(0.0, float(seconds)), 60.0)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m:02d}:{s:04.1f}"


def hit_text(hit: Hit) -> str:
    """A one-line description of a hit, used as the document text (video segments have no text)."""
    text = (
        f"{Path(hit.video).name} {clock(hit.start)}-{clock(hit.end)} "
        f"(best frame at {clock(hit.best_time)}, score {hit.score:.3f})"
    )
    if hit.transcript is not None:  # what is said there: the line that matched
        text += f': "{hit.transcript.text}" at {clock(hit.transcript.start)}'
    return text


def hit_metadata(hit: Hit, thumbnail: bool = True, link: bool = True) -> dict[str, Any]:
    """The metadata of a hit: :meth:`Hit.to_dict` plus ``video_name`` and (with ``link``) ``deep_link``;
    ``thumbnail`` (a data URI) only when asked for and the hit has one. Plain JSON-serialisable values."""
    md = hit.to_dict(thumbnail=bool(thumbnail and hit.thumbnail))
    md["video_name"] = Path(md["video"]).name
    if link:
        md["deep_link"] = deep_link(md["video"], md["start"], md["end"])
    return md


def check_k(k: Any) -> int:
    """``k`` as a positive int, or a ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k
