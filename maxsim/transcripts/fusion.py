r"""Scoring segments by what is said in them, and fusing that with what is seen.

**Cues onto segments.** A cue ``[a, b)`` belongs to every segment ``[s, e)`` of the same video it
overlaps: ``a < e and b > s`` (a zero-length cue, ``a == b``, to the segment with ``s <= a < e``). A cue
spanning a cut belongs to both segments. A segment's transcript score is the best score among its cues,
and that cue is the segment's matching line (its text and time go with the hit); a segment no cue
overlaps has no transcript score (NaN here).

**Fusion.** Each candidate segment ``i`` has a score ``s_c(i)`` per channel ``c`` (``visual``,
``transcript``), or none; channel ``c`` weighs ``w_c >= 0`` (by default ``w_transcript = w`` and
``w_visual = 1 - w``, ``w = 0.5``).

- ``method="weighted"`` (relative score fusion): each channel's scores are min-max normalised over the
  candidates that have one, so the best is 1 and the worst 0 (all 1 when they are equal), and a missing
  score counts 0:

  .. math:: F(i) = \sum_c w_c \, \frac{s_c(i) - \min_j s_c(j)}{\max_j s_c(j) - \min_j s_c(j)}

  The magnitudes matter: a segment far ahead in one channel stays ahead. MaxSim sums of the visual and
  transcript channels live on different scales (they grow with the number of query tokens), which the
  normalisation removes; the fused score is in ``[0, sum of weights]``.
- ``method="rrf"`` (reciprocal rank fusion): only ranks matter. With ``rank_c(i)`` the 1-based rank of
  ``i`` among the candidates scored in channel ``c`` (equal scores share the best rank) and ``k = 60``:

  .. math:: F(i) = \sum_{c:\ s_c(i)\ \text{exists}} \frac{w_c}{k + \operatorname{rank}_c(i)}

  Robust to outlying scores and to channels whose scores mean different things; a segment found by
  both channels beats one found by a single channel at a similar rank.

With a single channel there is nothing to fuse: its scores are returned as they are.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

FUSION_METHODS = ("weighted", "rrf")
CHANNELS = ("visual", "transcript")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Fusion:
    """How the channel scores of a segment become one: ``method`` (``"weighted"`` or ``"rrf"``), the
    transcript channel's weight ``transcript_weight`` (the visual channel's is ``1 - transcript_weight``)
    and RRF's ``rrf_k``. See the module docstring for the formulas."""

    method: str = "weighted"
    transcript_weight: float = 0.5
    rrf_k: float = 60.0

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"fusion method must be one of {FUSION_METHODS}, got {self.method!r}")
        if not 0.0 <= self.transcript_weight <= 1.0:
            raise ValueError(f"transcript_weight must be in [0, 1], got {self.transcript_weight}")
        if not self.rrf_k >= 0.0:
            raise ValueError(f"rrf_k must be >= 0, got {self.rrf_k}")

    @property
    def weights(self) -> dict[str, float]:
        """The weight of each channel."""
        return {"visual": 1.0 - self.transcript_weight, "transcript": self.transcript_weight}


def normalize_scores(scores: np.ndarray) -> np.ndarray:
    """Min-max normalised scores: the best 1, the worst 0, all 1 when they are equal; NaN (no score)
    stays NaN."""
    x = np.asarray(scores, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    have = ~np.isnan(x)
    if not have.any():
        return out
    lo, hi = x[have].min(), x[have].max()
    out[have] = 1.0 if hi == lo else (x[have] - lo) / (hi - lo)
    return out


def rank_scores(scores: np.ndarray) -> np.ndarray:
    """1-based ranks by descending score, equal scores sharing the best rank; NaN stays NaN."""
    x = np.asarray(scores, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    have = np.flatnonzero(~np.isnan(x))
    if have.size == 0:
        return out
    vals = x[have]
    # rank = 1 + number of strictly better scores
    sorted_desc = np.sort(vals)[::-1]
    out[have] = 1 + np.searchsorted(-sorted_desc, -vals, side="left")
    return out


def fuse_scores(channels: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None,
                method: str = "weighted", rrf_k: float = 60.0) -> np.ndarray:
    """Fused scores of aligned candidate arrays, one per channel (NaN where a candidate has no score in
    a channel), by ``method`` with channel ``weights`` (default: all 1). One channel: its scores as
    they are (NaN as -inf)."""
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion method must be one of {FUSION_METHODS}, got {method!r}")
    arrays = {c: np.asarray(v, dtype=np.float64).reshape(-1) for c, v in channels.items()}
    if not arrays:
        raise ValueError("no channel to fuse")
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) != 1:
        lengths = {c: a.shape[0] for c, a in arrays.items()}
        raise ValueError(f"channel score arrays differ in length: {lengths}")
    weights = dict(weights or {})
    unknown = set(weights) - set(arrays)
    if unknown:
        raise ValueError(f"weights name channels that have no scores: {sorted(unknown)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"channel weights must be >= 0, got {weights}")
    if len(arrays) == 1:
        (only,) = arrays.values()
        return np.where(np.isnan(only), -np.inf, only)
    fused = np.zeros(sizes.pop())
    for c, a in arrays.items():
        w = float(weights.get(c, 1.0))
        if method == "weighted":
            fused += w * np.nan_to_num(normalize_scores(a), nan=0.0)
        else:
            r = rank_scores(a)
            fused += np.where(np.isnan(r), 0.0, w / (rrf_k + np.nan_to_num(r, nan=1.0)))
    return fused


@dataclass(frozen=True)
class FusedScore(Generic[K]):
    """A candidate's fused score and its score in each channel that scored it."""

    key: K
    score: float
    scores: dict[str, float]


def fuse(channel_scores: Mapping[str, Mapping[K, float]], fusion: Fusion | None = None,
         weights: Mapping[str, float] | None = None) -> list[FusedScore[K]]:
    """Fuse per-channel scores of candidates (``{"visual": {seg: score}, "transcript": {seg: score}}``)
    into one ranking, best first (ties in the order candidates first appear). ``weights`` overrides
    ``fusion.weights`` (channels it does not name weigh 1)."""
    fusion = fusion or Fusion()
    keys: dict[K, None] = {}
    for scores in channel_scores.values():
        keys.update(dict.fromkeys(scores))
    order = list(keys)
    arrays = {c: np.array([s.get(k, np.nan) for k in order], dtype=np.float64)
              for c, s in channel_scores.items()}
    w = dict(weights) if weights is not None else {c: fusion.weights.get(c, 1.0) for c in arrays}
    fused = fuse_scores(arrays, w, fusion.method, fusion.rrf_k)
    ranked = sorted(range(len(order)), key=lambda i: -fused[i])
    return [FusedScore(order[i], float(fused[i]),
                       {c: float(s[order[i]]) for c, s in channel_scores.items() if order[i] in s})
            for i in ranked]


# -- cues onto segments ---------------------------------------------------------------------------------
def cue_segment_pairs(cue_starts: Sequence[float] | np.ndarray, cue_ends: Sequence[float] | np.ndarray,
                      seg_starts: Sequence[float] | np.ndarray, seg_ends: Sequence[float] | np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(cue_index, segment_index)`` of every overlapping cue and segment of one video (the overlap
    rule of the module docstring), sorted by cue then segment. Segments that do not overlap each
    other (what a segmenter makes) are matched in O((cues + segments) log segments); overlapping
    segments are supported too."""
    a, b = np.asarray(cue_starts, np.float64), np.asarray(cue_ends, np.float64)
    s, e = np.asarray(seg_starts, np.float64), np.asarray(seg_ends, np.float64)
    if a.shape != b.shape or s.shape != e.shape:
        raise ValueError("cue starts/ends and segment starts/ends must have matching lengths")
    point = a >= b  # zero-length cues are points at their start
    if a.size == 0 or s.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(s, kind="stable")
    ss, es = s[order], e[order]
    if np.all(np.diff(es) >= 0):
        lo = np.searchsorted(es, a, side="right")  # first segment ending after the cue starts
        hi = np.where(point, np.searchsorted(ss, a, side="right"), np.searchsorted(ss, b, side="left"))
        counts = np.maximum(hi - lo, 0)
        cue_idx = np.repeat(np.arange(a.size), counts)
        offsets = np.repeat(np.cumsum(counts) - counts, counts)
        pos = np.repeat(lo, counts) + (np.arange(cue_idx.size) - offsets)
        seg_idx = order[pos]
    else:
        c_list, s_list = [], []
        for start in range(0, a.size, 1024):
            sl = slice(start, start + 1024)
            hit = (a[sl, None] < e[None, :]) & np.where(point[sl, None], a[sl, None] >= s[None, :],
                                                        b[sl, None] > s[None, :])
            ci, si = np.nonzero(hit)
            c_list.append(ci + start)
            s_list.append(si)
        cue_idx, seg_idx = np.concatenate(c_list), np.concatenate(s_list)
    keep = np.lexsort((seg_idx, cue_idx))
    return cue_idx[keep].astype(np.int64), seg_idx[keep].astype(np.int64)


def best_cue_per_segment(cue_scores: Sequence[float] | np.ndarray,
                         cue_starts: Sequence[float] | np.ndarray, cue_ends: Sequence[float] | np.ndarray,
                         seg_starts: Sequence[float] | np.ndarray, seg_ends: Sequence[float] | np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per segment of one video, its transcript score (the best score of the cues overlapping it; NaN
    when none does) and that cue's index (-1 when none; among equal scores the earliest cue)."""
    scores = np.asarray(cue_scores, np.float64)
    if scores.shape != np.shape(cue_starts):
        raise ValueError(f"{scores.shape[0]} cue scores for {len(cue_starts)} cues")
    n_seg = len(seg_starts)
    best = np.full(n_seg, np.nan)
    cue_of = np.full(n_seg, -1, np.int64)
    ci, si = cue_segment_pairs(cue_starts, cue_ends, seg_starts, seg_ends)
    if ci.size:
        order = np.lexsort((ci, -scores[ci], si))  # per segment: best score, then earliest cue
        ci, si = ci[order], si[order]
        first = np.ones(si.size, bool)
        first[1:] = si[1:] != si[:-1]
        best[si[first]] = scores[ci[first]]
        cue_of[si[first]] = ci[first]
    return best, cue_of
