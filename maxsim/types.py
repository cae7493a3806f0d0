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


@runtime_checkable
class Encoder(Protocol):
    """Turns texts and clips into multi-vectors: one L2-normalised row per token."""

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
    """

    settings: dict[str, Any]
    revision: str | None
    spec: str | None


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

    def to_dict(self, thumbnail: bool = False) -> dict[str, Any]:
        """The hit as plain JSON-serialisable values; with ``thumbnail`` the JPEG as a data URI (or None)."""
        d: dict[str, Any] = {
            "video": str(self.video),
            "start": float(self.start),
            "end": float(self.end),
            "score": float(self.score),
            "segment_id": int(self.segment_id),
            "best_time": float(self.best_time),
        }
        if thumbnail:
            d["thumbnail"] = thumbnail_data_uri(self.thumbnail)
        return d
