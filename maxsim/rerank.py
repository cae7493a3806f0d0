"""Re-ranking the top hits of a search with a stronger, slower model that sees the query and the segment
together (a cross-encoder, such as the Qwen3-VL-Reranker vision-language model).

A reranker is any object with ``score(query, clips) -> list[float]`` (higher is more relevant) and a
``name``; optionally ``frame_size(n_frames)`` (see :class:`~maxsim.types.FrameSize`) sizes the frames it is
given. :func:`rerank_hits` decodes each hit's sampled frames again from its video (by the frame times the
index keeps, so the reranker sees the frames the first stage encoded, at the reranker's own size), scores
them, and returns the hits re-ordered by that score, each carrying both scores
(``hit.scores == {"maxsim": ..., "rerank": ...}``, ``hit.score`` the rerank one).

Registered rerankers (``load_reranker``): ``qwen3-vl-reranker`` (Qwen/Qwen3-VL-Reranker-2B by default,
``qwen3-vl-reranker:<id or folder>`` for another checkpoint, e.g. the 8B).

A stage the engine composes after its search (:class:`RerankStage`): it decodes media and runs a model, so
it lives beside ingest rather than inside :mod:`maxsim.search`, which only reads the index.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from maxsim.encoders.record import encoder_frame_size
from maxsim.errors import RerankError, VideoError
from maxsim.media.frames import scale_frame
from maxsim.media.video import frames_at
from maxsim.search import SearchOptions, SearchResult
from maxsim.specs import import_attr
from maxsim.types import Clip, Hit

DEFAULT_RERANKER = "qwen3-vl-reranker"
# Frames decoded per hit whose index entry keeps no frame times (hits from elsewhere).
FALLBACK_FRAMES = 8
# Hits of one video whose frame times are closer than this (seconds) are decoded in one pass.
MERGE_GAP_S = 20.0
ON_MISSING = ("error", "drop")


@runtime_checkable
class Reranker(Protocol):
    """Scores how well each clip answers a text query (higher is better; any scale)."""

    name: str

    def score(self, query: str, clips: Sequence[Clip]) -> list[float]: ...


_RERANKERS: dict[str, str | Callable[..., Reranker]] = {
    "qwen3-vl-reranker": "maxsim.encoders.qwen3vl_reranker:load",
}


def register_reranker(name: str, factory: str | Callable[..., Reranker]) -> None:
    """Make ``factory`` (a callable taking ``id_or_path=None, **kwargs``, or ``"module:attr"``) loadable
    by :func:`load_reranker` under ``name``."""
    _RERANKERS[name] = factory


def registered_rerankers() -> list[str]:
    """Names accepted by :func:`load_reranker`."""
    return sorted(_RERANKERS)


def _check(obj: Any, spec: str) -> Reranker:
    if not callable(getattr(obj, "score", None)):
        raise TypeError(f"reranker {spec!r} gave {type(obj).__name__}, which has no score(query, clips)")
    if not hasattr(obj, "name"):
        raise TypeError(f"reranker {spec!r} gave {type(obj).__name__}, which has no name")
    return obj


def load_reranker(spec: str | Reranker | None = None, **kwargs: Any) -> Reranker:
    """A reranker from a registered name (``"qwen3-vl-reranker"``), a name with its checkpoint
    (``"qwen3-vl-reranker:/models/Qwen3-VL-Reranker-8B"``), ``package.module:attr`` (a class or factory
    called with ``kwargs``, or an instance), or an object with ``score`` (returned as is). None: the
    default, :data:`DEFAULT_RERANKER`."""
    if spec is None:
        spec = DEFAULT_RERANKER
    if not isinstance(spec, str):
        return _check(spec, type(spec).__name__)
    name, sep, checkpoint = spec.partition(":")
    if name in _RERANKERS and (not sep or checkpoint):
        factory = _RERANKERS[name]
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        if sep:
            kwargs = {"id_or_path": checkpoint, **kwargs}
        return _check(factory(**kwargs), spec)
    if sep:
        obj: Any = import_attr(spec, "reranker")
        if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "score")):
            obj = obj(**kwargs)
        return _check(obj, spec)
    raise ValueError(
        f"unknown reranker {spec!r}: expected a registered name ({', '.join(registered_rerankers())}), "
        "name:<checkpoint>, or package.module:attr"
    )


def _hit_times(hit: Hit) -> np.ndarray:
    times = np.asarray(hit.frame_times, dtype=np.float64).reshape(-1)
    if times.size:
        return times
    step = (hit.end - hit.start) / FALLBACK_FRAMES
    return hit.start + step * (np.arange(FALLBACK_FRAMES) + 0.5)


def hit_clips(hits: Sequence[Hit], reranker: object | None = None,
              on_missing: str = "error") -> list[Clip | None]:
    """The clip of each hit, decoded again from its video: the frames at the hit's ``frame_times`` (evenly
    spaced ones when it keeps none), RGB, sized for ``reranker`` (its ``frame_size``, else a longest side
    of 448). Hits of one video are decoded together, one seek per run of nearby hits.

    A video that is gone or unreadable raises :class:`RerankError` naming it (``on_missing="error"``), or
    gives None for its hits (``"drop"``)."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")
    out: list[Clip | None] = [None] * len(hits)
    by_video: dict[str, list[int]] = {}
    for i, h in enumerate(hits):
        by_video.setdefault(str(h.video), []).append(i)
    for video, idx in by_video.items():
        idx.sort(key=lambda i: float(_hit_times(hits[i])[0]))
        runs: list[list[int]] = []
        for i in idx:
            gap = float(_hit_times(hits[i])[0]) - float(_hit_times(hits[runs[-1][-1]])[-1]) if runs else 0.0
            if runs and gap < MERGE_GAP_S:
                runs[-1].append(i)
            else:
                runs.append([i])
        try:
            for run in runs:
                times = [_hit_times(hits[i]) for i in run]
                frames = frames_at(video, np.concatenate(times))
                at = 0
                for i, t in zip(run, times, strict=True):
                    mine = frames[at:at + len(t)]
                    at += len(t)
                    size = encoder_frame_size(reranker, len(mine)) if reranker is not None else None
                    rgb = [cv2.cvtColor(scale_frame(f, None, size), cv2.COLOR_BGR2RGB) for _, f in mine]
                    shape = rgb[0].shape
                    rgb = [f if f.shape == shape else cv2.resize(f, (shape[1], shape[0])) for f in rgb]
                    h = hits[i]
                    out[i] = Clip(video, float(h.start), float(h.end), np.stack(rgb),
                                  np.array([ft for ft, _ in mine], dtype=np.float64))
        except VideoError as e:
            if on_missing == "drop":
                for i in idx:
                    out[i] = None
                continue
            raise RerankError(
                f"cannot re-rank hits of {video}: {e.reason}. The index still lists this video; restore the "
                f"file, remove it from the index (maxsim delete), or search without rerank", video=video,
            ) from e
    return out


def rerank_hits(query: str, hits: Sequence[Hit], reranker: Reranker, k: int | None = None,
                on_missing: str = "error") -> list[Hit]:
    """``hits`` re-scored by ``reranker`` against ``query`` and re-ordered, best first (ties keep their
    first-stage order), at most ``k``. Each returned hit's ``score`` is the rerank score and its
    ``scores`` keep the earlier ones (``{"maxsim": ..., "rerank": ...}``; a hit without stage scores
    records its score as ``"first_stage"``). Frames are decoded again from the videos (see
    :func:`hit_clips`, which also says what ``on_missing`` does)."""
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not hits:
        return []
    clips = hit_clips(hits, reranker, on_missing)
    keep = [i for i, c in enumerate(clips) if c is not None]
    scores = list(reranker.score(query, [clips[i] for i in keep])) if keep else []
    if len(scores) != len(keep) or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
        raise RerankError(f"reranker {getattr(reranker, 'name', reranker)!r} returned {len(scores)} scores "
                          f"for {len(keep)} clips, or a score that is not a finite number: {scores[:8]}")
    out = []
    for i, s in zip(keep, scores, strict=True):
        h = hits[i]
        before = dict(h.scores) if h.scores else {"first_stage": float(h.score)}
        out.append(replace(h, score=float(s), scores={**before, "rerank": float(s)}))
    order = sorted(range(len(out)), key=lambda j: -out[j].score)  # sorted() is stable
    ranked = [out[j] for j in order]
    return ranked if k is None else ranked[:k]


class RerankStage:
    """The re-ranking an engine runs after its search when :class:`~maxsim.search.SearchOptions` asks for
    it (``rerank=N``): the reranker (a spec or an object, see :func:`load_reranker`; None: the default),
    loaded on first use, and each query's first-stage hits re-scored by it."""

    def __init__(self, reranker: Reranker | str | None = None) -> None:
        self.spec = reranker
        self._reranker: Reranker | None = None if reranker is None or isinstance(reranker, str) else reranker

    @property
    def loaded(self) -> bool:
        """Whether the reranker is loaded (an object given counts as loaded)."""
        return self._reranker is not None

    @property
    def reranker(self) -> Reranker:
        """The reranker, loaded on first use; one whose weights or code cannot be had raises
        :class:`RerankError` saying why."""
        if self._reranker is None:
            try:
                self._reranker = load_reranker(self.spec)
            except (OSError, ImportError) as e:  # MissingWeightsError is an OSError
                spec = self.spec if isinstance(self.spec, str) else DEFAULT_RERANKER
                raise RerankError(f"re-ranking is not available: reranker {spec!r} cannot be loaded "
                                  f"({e})") from e
        return self._reranker

    def apply(self, texts: Sequence[str], results: Sequence[SearchResult], options: SearchOptions
              ) -> list[SearchResult]:
        """Each query's first-stage results (searched with ``options.first_stage()``) re-ranked, the best
        ``options.k`` kept, with the re-ranking recorded in their stats; the results as they are when
        ``options.rerank`` is 0."""
        if not options.rerank:
            return list(results)
        reranker = self.reranker
        out = []
        for text, r in zip(texts, results, strict=True):
            t0 = time.perf_counter()
            hits = rerank_hits(text, r.hits, reranker, k=options.k)
            stats = replace(r.stats, reranked=len(r.hits), reranker=str(getattr(reranker, "name", "?")),
                            rerank_ms=(time.perf_counter() - t0) * 1000)
            out.append(SearchResult(hits, stats))
        return out


__all__ = [
    "DEFAULT_RERANKER", "RerankError", "RerankStage", "Reranker", "hit_clips", "load_reranker",
    "register_reranker", "registered_rerankers", "rerank_hits",
]
