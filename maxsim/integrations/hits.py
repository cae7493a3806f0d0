"""What a retrieved moment looks like to a text framework: a short text and a metadata dict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maxsim.search.moments import check_group
from maxsim.types import Hit, Moment, thumbnail_data_uri

__all__ = ["check_group", "check_k", "clock", "deep_link", "hit_metadata", "hit_text", "moment_metadata",
           "moment_text", "retrieve", "segment_id_of", "thumbnail_data_uri"]

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


def moment_text(m: Moment) -> str:
    """A one-line description of a moment (the document text of a retriever with ``group``)."""
    return (
        f"{Path(m.video).name} {clock(m.start)}-{clock(m.end)} ({len(m.segments)} segment"
        f"{'' if len(m.segments) == 1 else 's'}, best frame at {clock(m.best_time)}, score {m.score:.3f})"
    )


def moment_metadata(m: Moment, thumbnail: bool = True, link: bool = True) -> dict[str, Any]:
    """The metadata of a moment: video, video_name, start, end, score, best_time, ``segment_ids`` (the
    segments merged), ``evidence`` (its best segment's, per query token), deep_link (with ``link``) and
    the best frame's thumbnail (a data URI) when asked for. Plain JSON-serialisable values."""
    best = m.best
    md: dict[str, Any] = {
        "video": str(m.video), "video_name": Path(m.video).name, "start": float(m.start), "end": float(m.end),
        "score": float(m.score), "best_time": float(m.best_time), "segment_id": int(best.segment_id),
        "segment_ids": [int(h.segment_id) for h in m.segments],
        "evidence": [e.to_dict() for e in best.evidence],
    }
    if link:
        md["deep_link"] = deep_link(md["video"], md["start"], md["end"])
    if thumbnail and m.thumbnail:
        md["thumbnail"] = thumbnail_data_uri(m.thumbnail)
    return md


def retrieve(engine: Any, query: Any, k: int, group: str, thumbnail: bool, **search: Any
             ) -> list[Hit] | list[Moment]:
    """What a retriever returns for ``query`` (a text or a :class:`maxsim.Query`): segment hits
    (``group="segments"``) or moments (``"moments"``, ``"video"``: :meth:`maxsim.Engine.moments`)."""
    if check_group(group) == "segments":
        return engine.search(query, k=k, **search)
    return engine.moments(query, k=k, group=group, thumbnails=thumbnail, **search)


def check_k(k: Any) -> int:
    """``k`` as a positive int, or a ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k


def segment_id_of(item: Any) -> int:
    """The segment id of what a retriever returned, for "more like this": a LangChain ``Document`` or a
    LlamaIndex node (its ``metadata["segment_id"]``), their id ``"maxsim:<id>"``, a :class:`Hit`, or the id
    itself. ValueError naming it otherwise."""
    if isinstance(item, Hit):
        return int(item.segment_id)
    node = getattr(item, "node", None)  # a NodeWithScore
    metadata = getattr(node if node is not None else item, "metadata", None)
    if isinstance(metadata, dict) and isinstance(metadata.get("segment_id"), int):
        return int(metadata["segment_id"])
    if isinstance(item, str) and item.startswith("maxsim:") and item[7:].isdigit():
        return int(item[7:])
    if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return item
    raise ValueError(f"not a maxsim moment or segment id: {item!r} (give a retrieved Document or node, its "
                     "id \"maxsim:<id>\", or the segment id)")
