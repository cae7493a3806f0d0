"""What the server may hand out: the indexed videos under stable ids, and segment thumbnails."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maxsim.index.snapshot import Snapshot

_EXTRA_TYPES = {
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".ts": "video/mp2t",
    ".avi": "video/x-msvideo",
    ".ogv": "video/ogg",
}


def video_id(path: str) -> str:
    """The stable id of an indexed video: 16 hex digits of the SHA-256 of its absolute path (its bytes:
    UTF-8, or the name's own bytes where they are not UTF-8)."""
    return hashlib.sha256(os.fsencode(str(path))).hexdigest()[:16]


def media_type(path: str) -> str:
    """The MIME type a browser needs to play ``path``."""
    ext = Path(path).suffix.lower()
    return _EXTRA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass(frozen=True)
class VideoEntry:
    """One indexed video."""

    id: str
    path: str
    segments: int
    indexed_until: float  # end of its last segment, seconds

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "name": self.name,
            "segments": self.segments,
            "indexed_until": self.indexed_until,
        }


@dataclass(frozen=True)
class _State:
    version: int
    snap: Snapshot
    videos: dict[str, VideoEntry]
    by_path: dict[str, VideoEntry]
    seg_sorted: np.ndarray  # live segment ids, ascending
    seg_rows: np.ndarray  # their table rows


def _build(snap: Snapshot) -> _State:
    """The catalog of one open version: per video from the manifest's catalog, thumbnails by segment id."""
    rows = np.flatnonzero(snap.live)
    ids = snap.segment_ids[rows].astype(np.int64)
    if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):  # parts are usually in id order already
        order = np.argsort(ids, kind="stable")
        ids, rows = ids[order], rows[order]
    ends = snap.ends[rows]
    entries: dict[str, VideoEntry] = {}
    for path, rec in sorted((snap.manifest.videos or {}).items()):
        until = 0.0
        for lo, hi in rec.get("ranges", ()):  # the video's segment ids: one range unless re-ingested
            a, b = np.searchsorted(ids, (lo, hi))
            if b > a:
                until = max(until, float(ends[a:b].max()))
        e = VideoEntry(video_id(path), path, int(rec["segments"]), until)
        entries[e.id] = e
    return _State(snap.version, snap, entries, {e.path: e for e in entries.values()}, ids, rows)


class Catalog:
    """Indexed videos by id and thumbnails by segment id, for the version the engine has open.

    Built from the engine's own open snapshot and its manifest's catalog of videos (no second mapping of
    the index, no pass over the segment rows in Python), once per version, by the first caller that needs
    it. Building costs O(live segments) in numpy: async code calls this through a worker thread. Only what
    is live in that version is listed, so only indexed files can ever be served.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._state: _State | None = None

    def _current(self) -> _State:
        snap = self._engine.snapshot  # the engine's open version (one read: a consistent snapshot)
        state = self._state
        if state is not None and state.version == snap.version:
            return state
        with self._lock:
            state = self._state
            if state is None or state.version != snap.version:
                state = _build(snap)
                self._state = state  # one assignment: readers see a whole version or the previous one
            return state

    def videos(self) -> list[VideoEntry]:
        """The indexed videos, by path."""
        return sorted(self._current().videos.values(), key=lambda e: e.path)

    def get(self, vid: str) -> VideoEntry | None:
        """The video with id ``vid`` (None when it is not in the index)."""
        return self._current().videos.get(vid)

    def by_path(self, path: str) -> VideoEntry | None:
        """The video indexed under exactly this absolute path."""
        return self._current().by_path.get(path)

    def resolve(self, ref: str) -> VideoEntry | None:
        """A video by id, or by its indexed path."""
        return self.get(ref) or self.by_path(ref) or self.by_path(str(Path(ref).resolve()))

    def segment(self, segment_id: int) -> tuple[str, float, float]:
        """The video path, start and end of live segment ``segment_id``; KeyError if no such segment."""
        st = self._current()
        i = int(np.searchsorted(st.seg_sorted, segment_id))
        if i >= st.seg_sorted.size or int(st.seg_sorted[i]) != segment_id:
            raise KeyError(segment_id)
        row = int(st.seg_rows[i])
        return st.snap.video(row), float(st.snap.starts[row]), float(st.snap.ends[row])

    def thumbnail(self, segment_id: int) -> bytes | None:
        """The JPEG thumbnail of live segment ``segment_id``; KeyError if no such segment."""
        st = self._current()
        i = int(np.searchsorted(st.seg_sorted, segment_id))
        if i >= st.seg_sorted.size or int(st.seg_sorted[i]) != segment_id:
            raise KeyError(segment_id)
        return st.snap.table.column("thumbnail")[int(st.seg_rows[i])].as_py()
