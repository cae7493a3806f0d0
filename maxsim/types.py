"""The contracts every stage shares: clips going into an encoder, the encoder itself, segments and hits."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote_to_bytes

import numpy as np

if TYPE_CHECKING:  # annotations only: the media stage (and its decode worker) runs without torch
    import torch


@dataclass
class Clip:
    """A span of one video with the frames sampled from it, as handed to an encoder."""

    video: str  # path of the source video
    start: float  # seconds
    end: float  # seconds
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (n,) float seconds, one per frame


@dataclass(frozen=True)
class FrameSize:
    """The largest frames an encoder can use: a frame is scaled down (never up, aspect kept) until it has
    at most ``max_pixels`` pixels and its shorter side is at most ``short_side``; None: no limit of that
    kind. Larger frames would only be shrunk again by the encoder's own processor."""

    max_pixels: int | None = None
    short_side: int | None = None

    def __post_init__(self) -> None:
        for key in ("max_pixels", "short_side"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"FrameSize.{key} must be a positive integer or None, got {v!r}")

    def scale(self, height: int, width: int) -> float:
        """The factor (<= 1) that brings a ``height`` x ``width`` frame within these limits."""
        s = 1.0
        if self.max_pixels is not None and height * width > self.max_pixels:
            s = min(s, (self.max_pixels / (height * width)) ** 0.5)
        if self.short_side is not None and min(height, width) > self.short_side:
            s = min(s, self.short_side / min(height, width))
        return s

    def to_dict(self) -> dict[str, int]:
        """The limits that are set, as plain values (how an index records them)."""
        return {k: v for k, v in (("max_pixels", self.max_pixels), ("short_side", self.short_side))
                if v is not None}

    def describe(self) -> str:
        """The limits as ``max_pixels=N,short_side=M`` (``any`` for none), as sampler names show them."""
        parts = []
        if self.max_pixels is not None:
            parts.append(f"max_pixels={self.max_pixels}")
        if self.short_side is not None:
            parts.append(f"short_side={self.short_side}")
        return ",".join(parts) or "any"


@runtime_checkable
class Encoder(Protocol):
    """Turns texts and clips into multi-vectors: one L2-normalised row per token (optional members:
    :class:`EncoderExtras`)."""

    name: str  # recorded in the index
    dim: int

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:  # each (n_tokens, dim)
        ...

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:  # each (n_tokens, dim)
        ...


class EncoderExtras(Protocol):
    """Members an encoder may have beyond :class:`Encoder` (all optional; read through
    :mod:`maxsim.encoders.record`):

    - ``settings``: a dict of what it was loaded with; recorded in the index. Entries other than device,
      dtype and batch sizes change the vectors, so a video indexed under other settings is re-encoded.
    - ``revision``: the hub commit its weights were loaded at (pinned when the index reloads it).
    - ``spec``: the spec string that loads it again (recorded, so ``Engine(path)`` reopens it).
    - ``frame_size(n_frames) -> FrameSize | None``: the largest frames it can use when a clip has
      ``n_frames`` frames; a frame sampler without an explicit ``max_side`` sizes the frames it keeps to
      it (larger frames would only be shrunk again by the encoder's own processor).
    - ``token_grid(clip, n_tokens) -> TokenGrid | None``: how the ``n_tokens`` vectors it made of ``clip``
      lie on its frames (recorded per segment; search evidence gives each match a frame and a cell).
    - ``token_labels(text) -> list[str]``: a short label per query token of ``text`` (for explanations).
    """

    settings: dict[str, Any]
    revision: str | None
    spec: str | None

    def frame_size(self, n_frames: int) -> FrameSize | None: ...

    def token_grid(self, clip: Clip, n_tokens: int) -> TokenGrid | None: ...

    def token_labels(self, text: str) -> list[str]: ...


@dataclass(frozen=True)
class TokenGrid:
    """How a segment's token vectors lie on its frames: step after step, each step ``frames`` consecutive
    sampled frames (ColQwen3 merges frame pairs: 2) seen as ``rows`` x ``cols`` tokens in row-major order.
    A frame-level encoder (CLIP, SigLIP) is ``TokenGrid(1, 1, 1)``: one vector per frame, no position."""

    frames: int
    rows: int
    cols: int

    def __post_init__(self) -> None:
        for key in ("frames", "rows", "cols"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TokenGrid.{key} must be a positive integer, got {v!r}")

    @property
    def per_step(self) -> int:
        """Tokens per step (``rows * cols``)."""
        return self.rows * self.cols

    def fits(self, n_tokens: int, n_frames: int) -> bool:
        """Whether ``n_tokens`` tokens of a segment with ``n_frames`` sampled frames can lie on this grid."""
        steps, rest = divmod(int(n_tokens), self.per_step)
        return rest == 0 and 0 < steps and (steps - 1) * self.frames < max(int(n_frames), 1)

    def to_list(self) -> list[int]:
        return [self.frames, self.rows, self.cols]


@dataclass(frozen=True)
class Evidence:
    """Where one query token found its best match in a hit's segment: the winning token's frame (index
    into the segment's sampled frames, and its time), its cell in the frame's token grid (``row``, ``col``;
    None when the index does not know the grid: pooled tokens or an index written before grids were
    recorded, where the frame comes from the token's position in frame order), and the token's
    contribution to the score (its best dot product: the contributions sum to the MaxSim score)."""

    token: int  # query token index
    label: str | None  # the query token as text, when the encoder says (``token_labels``)
    frame: int
    time: float
    row: int | None
    col: int | None
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "label": self.label, "frame": self.frame, "time": self.time,
                "row": self.row, "col": self.col, "contribution": self.contribution}


@dataclass(frozen=True)
class Segment:
    """A time span [start, end) of a video, in seconds."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def video_key(path: str | os.PathLike) -> str:
    """The key a video has in the index: its absolute path with symlinks resolved."""
    return str(Path(path).resolve())


_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}


def encode_path(path: str) -> str:
    """``path`` as text that any UTF-8 store (an Arrow string column) holds, losslessly: ``path`` itself
    when it is valid Unicode; a name whose bytes are not UTF-8 (Python holds them as surrogate escapes)
    becomes NUL followed by its bytes, each byte outside printable ASCII (and ``%``) written as ``%XX``.
    No path contains NUL, so the two forms cannot be confused. :func:`decode_path` reverses it."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return "\x00" + "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in raw)


def decode_path(text: str) -> str:
    """The path :func:`encode_path` wrote as ``text``."""
    if not text.startswith("\x00"):
        return text
    return os.fsdecode(unquote_to_bytes(text[1:]))


def thumbnail_data_uri(jpeg: bytes | None) -> str | None:
    """A JPEG as a ``data:image/jpeg;base64,...`` URI, which JSON and HTML can carry (None or empty: None)."""
    if not jpeg:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


@dataclass(frozen=True)
class TranscriptLine:
    """The transcript line (cue) that matched a query in a hit's segment: its text and time (seconds)."""

    text: str
    start: float
    end: float
    speaker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": float(self.start), "end": float(self.end),
                "speaker": self.speaker}


@dataclass
class Hit:
    """One retrieved moment."""

    video: str
    start: float
    end: float
    score: float
    segment_id: int
    best_time: float  # frame time of the segment token that matched best
    thumbnail: bytes | None = field(default=None, repr=False)  # JPEG
    # The score of each stage that ranked it, e.g. {"maxsim": 0.71, "rerank": 0.93}; ``score`` is the last.
    scores: dict[str, float] = field(default_factory=dict)
    # Times (s) of the frames sampled from the segment at ingest (what a reranker decodes again).
    frame_times: tuple[float, ...] = field(default=(), repr=False)
    # The segment's transcript line that best matched the query (searches with the transcript channel).
    transcript: TranscriptLine | None = None
    # Per query token, where it matched (see Evidence); the segment's token grid (rows, cols) when known;
    # and the MaxSim score of the query against each sampled frame's tokens alone.
    evidence: list[Evidence] = field(default_factory=list, repr=False)
    grid: tuple[int, int] | None = field(default=None, repr=False)
    frame_scores: tuple[float, ...] = field(default=(), repr=False)

    def to_dict(self, thumbnail: bool = False) -> dict[str, Any]:
        """The hit as plain JSON-serialisable values; with ``thumbnail`` the JPEG as a data URI (or None)."""
        d: dict[str, Any] = {
            "video": str(self.video),
            "start": float(self.start),
            "end": float(self.end),
            "score": float(self.score),
            "scores": {str(k): float(v) for k, v in self.scores.items()},
            "segment_id": int(self.segment_id),
            "best_time": float(self.best_time),
        }
        if self.transcript is not None:
            d["transcript"] = self.transcript.to_dict()
        d["evidence"] = [e.to_dict() for e in self.evidence]
        d["grid"] = None if self.grid is None else list(self.grid)
        if thumbnail:
            d["thumbnail"] = thumbnail_data_uri(self.thumbnail)
        return d


@dataclass
class Moment:
    """A span of one video that matches a query: adjacent or overlapping segment hits merged (see
    :mod:`maxsim.search.moments`). ``start``/``end`` are refined from the frames that carried the match;
    ``score`` is the best segment's; ``best_time`` the time of its best frame; ``thumbnail`` a JPEG of
    that frame (decoded from the video; the best segment's thumbnail when the video cannot be read)."""

    video: str
    start: float
    end: float
    score: float
    segments: list[Hit]
    best_time: float
    thumbnail: bytes | None = field(default=None, repr=False)

    @property
    def best(self) -> Hit:
        """The segment hit that scored best."""
        return max(self.segments, key=lambda h: h.score)

    def to_dict(self, thumbnail: bool = False) -> dict[str, Any]:
        """The moment as plain JSON-serialisable values, its segments as :meth:`Hit.to_dict` dicts."""
        d: dict[str, Any] = {
            "video": str(self.video), "start": float(self.start), "end": float(self.end),
            "score": float(self.score), "best_time": float(self.best_time),
            "segments": [h.to_dict() for h in self.segments],
        }
        if thumbnail:
            d["thumbnail"] = thumbnail_data_uri(self.thumbnail)
        return d
