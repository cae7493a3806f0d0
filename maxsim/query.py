"""Queries beyond text: an image, a clip of a video, a segment of the index ("more like this"), each alone
or together with text, turned into one query multi-vector and searched (:class:`Query`).

Every part becomes tokens in the index's own space, the way documents got theirs:

- ``text``: the encoder's text tokens (``encode_texts``), as for a plain text search.
- ``image``: one frame encoded as a document is (``encode_clips`` of a one-frame clip, the frame scaled
  like the index's sampled frames); its tokens are the query. A path, encoded image bytes (PNG, JPEG, WebP,
  BMP...), a PIL image or an ``(H, W, 3)`` uint8 RGB array.
- ``clip=(video, start, end)``: the frames the index's frame-sampling recipe takes from that span (the
  frames nearest its ``k / fps`` grid times in ``[start, end)``, at most ``max_frames``, sized like the
  index's), encoded as a segment is.
- ``like=segment_id`` (a hit's ``segment_id``): that segment's stored tokens, read from the version
  searched; no encoder is needed. The segment itself is left out of the hits unless ``include_self``.

Parts given together are concatenated into one query (text and image, say): MaxSim sums over query tokens,
so each part weighs by its token count. Any combination is allowed (each at most once).

Visual queries can be long (a ColQwen3 frame is hundreds of tokens, a clip thousands) and a MaxSim search
costs in proportion to the query's tokens. The kernels take any count (the Triton kernel splits a long
query over several tiles; the CPU kernel loops over them), so the cap is about speed: each visual part
above ``max_tokens`` (default :data:`MAX_QUERY_TOKENS`) is reduced with the ingest's token reduction
(:mod:`maxsim.encoders.reduce`): near-duplicate tokens of consecutive frames dropped (cosine >= 0.95),
then Ward pooling down to ``max_tokens`` in windows of :data:`POOL_WINDOW` tokens (with SciPy; without it,
evenly spaced tokens are kept). Text is never reduced. Scores of a reduced query are sums over its reduced
tokens. Cost (2 shared AMD EPYC cores, worst case: random tokens, none near-duplicate): 700 tokens in
about 30 ms, 11,200 (16 frames of 700) in about 2 s; real frames, whose tokens repeat, reduce faster.

Re-ranking needs the query as text alone: a query with a visual part refuses ``rerank``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from maxsim.encoders.reduce import drop_duplicate_tokens, pool_tokens
from maxsim.errors import QueryError, UnknownSegmentError
from maxsim.index.snapshot import Snapshot
from maxsim.media.frames import FrameSampler, scale_frame
from maxsim.media.video import frames_at, probe
from maxsim.search import Searcher, SearchOptions, SearchResult
from maxsim.types import Clip, Encoder

MAX_QUERY_TOKENS = 256  # visual tokens per query part above which the part is reduced (see the docstring)
MAX_IMAGE_PIXELS = 50_000_000  # larger pictures are refused rather than decoded (a decompression bomb)
CLIP_END_SLACK_S = 0.05  # a clip may end this far past the video's announced duration (rounding)
DEDUP_COSINE = 0.95
POOL_WINDOW = 256  # Ward pooling windows of a query: O(window^2) each, so a long clip stays fast

ImageInput = Any  # str | os.PathLike | bytes | np.ndarray | PIL.Image.Image


def _is_pil(image: Any) -> bool:
    return hasattr(image, "convert") and hasattr(image, "mode") and hasattr(image, "size")


@dataclass(frozen=True, eq=False)  # an image array has no plain equality: compared by identity
class Query:
    """One query: ``text``, ``image``, ``clip=(video, start_s, end_s)`` and ``like=segment_id``, any of them
    together (at least one). Checked when made (types, shapes, the clip's span); files are read when it is
    encoded. ``include_self``: keep the ``like`` segment among the hits (default: left out).
    ``max_tokens``: the cap on each visual part's tokens (see the module docstring)."""

    text: str | None = None
    image: ImageInput = None
    clip: tuple[str | os.PathLike, float, float] | None = None
    like: int | None = None
    include_self: bool = False
    max_tokens: int = MAX_QUERY_TOKENS

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.text is None and self.image is None and self.clip is None and self.like is None:
            raise QueryError("nothing to search for: give text, image=, clip=(video, start, end) or like=")
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(f"text must be a str, got {type(self.text).__name__}")
        if self.image is not None:
            set_(self, "image", check_image_input(self.image))
        if self.clip is not None:
            set_(self, "clip", check_clip(self.clip))
        if self.like is not None:
            like = self.like
            if isinstance(like, bool) or not isinstance(like, numbers.Integral) or like < 0:
                raise QueryError(f"like must be a segment id (a hit's segment_id, an int >= 0), got {like!r}")
            set_(self, "like", int(like))
        mt = self.max_tokens
        if isinstance(mt, bool) or not isinstance(mt, numbers.Integral) or mt < 1:
            raise ValueError(f"max_tokens must be a positive int, got {mt!r}")

    @classmethod
    def of(cls, text: str | Query | None = None, *, image: ImageInput = None, clip: Any = None,
           like: int | None = None) -> Query:
        """``text`` if it is a Query (then image, clip and like must be None: TypeError otherwise), else a
        Query of the parts given: how :meth:`maxsim.Engine.query` takes its arguments."""
        if isinstance(text, list | tuple):
            raise TypeError(f"text must be a str, got {type(text).__name__}; use query_batch for several")
        if isinstance(text, Query):
            if image is not None or clip is not None or like is not None:
                raise TypeError("give a Query or image=/clip=/like=, not both: put them in the Query")
            return text
        return cls(text, image=image, clip=clip, like=like)

    @property
    def text_only(self) -> bool:
        """True for a plain text query (searched, batched and re-ranked as text)."""
        return self.image is None and self.clip is None and self.like is None

    def describe(self) -> str:
        """The query in words, for logs and errors."""
        parts = [] if self.text is None else [f"text {self.text!r}"]
        if self.image is not None:
            parts.append(f"image {self.image}" if isinstance(self.image, (str, Path)) else "an image")
        if self.clip is not None:
            parts.append("clip {} [{:g}, {:g}) s".format(*self.clip))
        if self.like is not None:
            parts.append(f"like segment {self.like}")
        return " + ".join(parts)


def check_image_input(image: Any) -> Any:
    """``image`` if it is a kind of image a query takes (a path, bytes, a PIL image, an ``(H, W, 3)`` uint8
    array, checked here); QueryError naming what it got otherwise."""
    if isinstance(image, (str, os.PathLike)):
        return Path(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise QueryError("image: the image bytes are empty")
        return bytes(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise QueryError(f"image array must be (H, W, 3) RGB, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise QueryError(f"image array must be uint8 (0-255 RGB), got dtype {image.dtype}")
        return image
    if _is_pil(image):
        return image
    raise QueryError(f"image must be a path, image bytes, a PIL image or an (H, W, 3) uint8 array, got "
                     f"{type(image).__name__}")


def check_clip(clip: Any) -> tuple[str, float, float]:
    """``(video, start, end)`` with ``0 <= start < end`` finite seconds, as ``(str, float, float)``."""
    try:
        video, start, end = clip
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise QueryError(f"clip must be (video path, start s, end s), got {clip!r}") from None
    if not isinstance(video, (str, os.PathLike)) or not str(video):
        raise QueryError(f"clip: the video must be a path, got {video!r}")
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise QueryError(f"clip {os.fspath(video)}: need 0 <= start < end in seconds, got start {start!r}, "
                         f"end {end!r}")
    return os.fspath(video), start, end


def load_image(image: ImageInput) -> np.ndarray:
    """The image as an ``(H, W, 3)`` uint8 RGB array: a file or bytes decoded (EXIF orientation applied,
    grey and alpha pictures made RGB), a PIL image converted. QueryError naming the file when it cannot."""
    image = check_image_input(image)
    if isinstance(image, np.ndarray):
        return image
    if _is_pil(image):
        w, h = image.size
        if w * h > MAX_IMAGE_PIXELS:
            raise QueryError(f"image of {w}x{h} pixels is larger than {MAX_IMAGE_PIXELS} pixels")
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, Path):
        if not image.is_file():
            raise QueryError(f"image {image}: no such file")
        try:
            data = np.fromfile(image, dtype=np.uint8)
        except OSError as e:
            raise QueryError(f"image {image}: cannot read it ({e.strerror or e})") from None
        what = f"image {image}"
    else:
        data, what = np.frombuffer(image, dtype=np.uint8), "the image bytes"
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise QueryError(f"{what}: not an image that can be decoded (PNG, JPEG, WebP, BMP, TIFF...)")
    if bgr.shape[0] * bgr.shape[1] > MAX_IMAGE_PIXELS:
        raise QueryError(f"{what}: {bgr.shape[1]}x{bgr.shape[0]} pixels is more than {MAX_IMAGE_PIXELS}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_clip(image: ImageInput, sampler: FrameSampler) -> Clip:
    """A one-frame clip of ``image``, scaled as ``sampler`` scales the frames it keeps."""
    rgb = load_image(image)
    frame = np.ascontiguousarray(scale_frame(rgb, sampler.max_side, sampler.frame_size))
    name = str(image) if isinstance(image, Path) else "<image>"
    return Clip(video=name, start=0.0, end=0.0, frames=frame[None], timestamps=np.zeros(1))


def sample_times(start: float, end: float, sampler: FrameSampler) -> np.ndarray:
    """The times ``sampler`` samples in ``[start, end)``: its ``k / fps`` grid, at most ``max_frames``
    evenly picked; the middle of the span when no grid time falls in it."""
    fps = sampler.fps
    first, last = math.ceil(start * fps - 1e-6), math.ceil(end * fps - 1e-6)
    times = np.arange(first, last, dtype=np.float64) / fps
    if times.size == 0:
        return np.array([(start + end) / 2])
    if times.size > sampler.max_frames:
        times = times[np.linspace(0, times.size - 1, sampler.max_frames).round().astype(np.int64)]
    return times


def video_clip(video: str, start: float, end: float, sampler: FrameSampler) -> Clip:
    """The clip ``sampler`` would hand the encoder for ``[start, end)`` of ``video``. QueryError when the
    span is not inside the video; VideoError for a file that cannot be decoded."""
    duration = probe(video).duration
    if duration > 0 and (start >= duration or end > duration + CLIP_END_SLACK_S):
        raise QueryError(f"clip {video} [{start:g}, {end:g}) s is outside the video, which lasts "
                         f"{duration:.3f} s")
    got = frames_at(video, sample_times(start, end, sampler))
    seen: dict[float, np.ndarray] = {}
    for t, bgr in got:
        if t not in seen:
            small = scale_frame(bgr, sampler.max_side, sampler.frame_size)
            seen[t] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    times = sorted(seen)
    return Clip(video=video, start=start, end=end, frames=np.stack([seen[t] for t in times]),
                timestamps=np.asarray(times, dtype=np.float64))


def segment_row(snapshot: Snapshot, segment_id: int) -> int:
    """The table row of live segment ``segment_id`` in ``snapshot``; UnknownSegmentError otherwise."""
    rows = np.flatnonzero((snapshot.segment_ids == segment_id) & snapshot.live)
    if rows.size == 0:
        raise UnknownSegmentError(
            f"like={segment_id}: no such segment in version {snapshot.version} of {snapshot.root} (deleted, "
            "or never indexed): give the segment_id of a hit")
    return int(rows[0])


def cap_tokens(tokens: torch.Tensor, n_frames: int, max_tokens: int) -> torch.Tensor:
    """``tokens`` (frame order) reduced to at most ``max_tokens``: near-duplicates of the previous frame's
    tokens dropped, then Ward pooling (evenly spaced tokens kept without SciPy, or to trim what pooling's
    windows leave over)."""
    n = tokens.shape[0]
    if n <= max_tokens:
        return tokens
    tokens, _ = drop_duplicate_tokens(tokens.float(), n_frames, DEDUP_COSINE)
    if tokens.shape[0] > max_tokens:
        try:
            tokens, _ = pool_tokens(tokens, tokens.shape[0] / max_tokens, window=POOL_WINDOW)
        except ImportError:
            pass
    if tokens.shape[0] > max_tokens:
        keep = np.linspace(0, tokens.shape[0] - 1, max_tokens).round().astype(np.int64)
        tokens = tokens[torch.from_numpy(keep)]
    return tokens


def _encoded(encoder: Encoder, clip: Clip) -> torch.Tensor:
    out = encoder.encode_clips([clip])
    if len(out) != 1 or not isinstance(out[0], torch.Tensor) or out[0].ndim != 2:
        raise QueryError(f"encoder {encoder.name} gave no (n_tokens, dim) matrix for {clip.video}")
    return out[0]


def query_tokens(query: Query, snapshot: Snapshot,
                 load: Callable[[], tuple[Encoder, FrameSampler]]) -> torch.Tensor:
    """The query's tokens, ``(n, dim)`` float32: its parts' tokens in the order text, image, clip, like.
    ``load`` gives the encoder and the index's frame sampler (called only when a part needs them)."""
    parts: list[torch.Tensor] = []
    if query.like is not None:  # checked first: costs nothing and needs no encoder
        row = segment_row(snapshot, query.like)
        times = snapshot.table.column("frame_times")[row].as_py() or []
        like = cap_tokens(snapshot.segment_tokens(row).float(), max(1, len(times)), query.max_tokens)
    if query.text is not None or query.image is not None or query.clip is not None:
        encoder, sampler = load()
        if query.text is not None:
            parts.append(encoder.encode_texts([query.text])[0])
        if query.image is not None:
            parts.append(cap_tokens(_encoded(encoder, image_clip(query.image, sampler)), 1, query.max_tokens))
        if query.clip is not None:
            clip = video_clip(*query.clip, sampler)
            parts.append(cap_tokens(_encoded(encoder, clip), len(clip.frames), query.max_tokens))
    if query.like is not None:
        parts.append(like)
    out = torch.cat([p.detach().float().cpu() for p in parts])
    if out.shape[0] == 0:
        raise QueryError(f"the query ({query.describe()}) has no tokens")
    return out


def search_query(query: Query, searcher: Searcher, load: Callable[[], tuple[Encoder, FrameSampler]],
                 options: SearchOptions) -> SearchResult:
    """Search ``searcher``'s snapshot with ``query`` (see the module docstring): its hits, best first, with
    the ``like`` segment left out unless ``query.include_self``."""
    if options.rerank and not query.text_only:
        raise QueryError(f"rerank re-scores hits against the query text; a query with an image, clip or "
                         f"like part cannot be re-ranked ({query.describe()})")
    tokens = query_tokens(query, searcher.snapshot, load)
    drop = query.like if query.like is not None and not query.include_self else None
    opts = options if drop is None else options.replace(k=options.k + 1)
    result = searcher.search([tokens], opts)[0]
    hits = [h for h in result.hits if h.segment_id != drop][: options.k]
    return SearchResult(hits, result.stats)


__all__ = [
    "MAX_QUERY_TOKENS", "Query", "QueryError", "UnknownSegmentError", "cap_tokens", "image_clip",
    "load_image", "query_tokens", "sample_times", "search_query", "segment_row", "video_clip",
]
