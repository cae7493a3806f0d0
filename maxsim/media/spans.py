"""The timeline of a video as segments: cut times normalised to tile ``[0, duration]`` exactly with bounded
segment lengths, fixed spans, and one decode pass to segment a file. Shared by every segmenter."""

from __future__ import annotations

import bisect
import heapq
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from maxsim.media.video import iter_frames
from maxsim.types import Segment

EPS = 1e-9
# Bounds on what a segmentation may produce: a segment shorter than MIN_SEGMENT_SECONDS is refused as a
# setting (fixed spans, the longest scene), and a video that would give more than MAX_SEGMENTS_PER_VIDEO
# segments (too short a setting for its length, or a timestamp that jumps hours ahead) fails on its own.
MIN_SEGMENT_SECONDS = 0.1
MAX_SEGMENTS_PER_VIDEO = 100_000


class SegmentLimitError(ValueError):
    """A video would be cut into more than :data:`MAX_SEGMENTS_PER_VIDEO` segments."""


def check_count(n: int, end: float, what: str = "segments") -> None:
    """Refuse a video whose timeline up to ``end`` seconds would make ``n`` segments, past the limit."""
    if n > MAX_SEGMENTS_PER_VIDEO:
        raise SegmentLimitError(
            f"its timeline up to {end:.6g} s would make {n} {what}, more than the limit of "
            f"{MAX_SEGMENTS_PER_VIDEO} per video (segments too short for its length, or timestamps that "
            "jump far ahead)"
        )


def check_seconds(seconds: float, what: str) -> float:
    """A segment length setting: a finite number of seconds, at least :data:`MIN_SEGMENT_SECONDS`."""
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds < MIN_SEGMENT_SECONDS:
        raise ValueError(f"{what} must be a number of seconds of at least {MIN_SEGMENT_SECONDS:g}, got "
                         f"{seconds!r}")
    return seconds


def run_segmenter(segmenter: Any, path: str | os.PathLike) -> list[Segment]:
    """Decode ``path`` once and segment it (the video's duration is that of its decoded frames)."""
    run = segmenter.start()
    with iter_frames(path, prefetch=8) as frames:
        if segmenter.needs_frames:
            for t, frame in frames:
                run.feed(t, frame)
        else:
            for _ in frames:
                pass
    return run.finish(frames.duration)


def check_duration(duration: float) -> float:
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0.0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    return duration


def normalize_segments(
    cuts_or_segments: Iterable[float] | Iterable[Segment] | Iterable[tuple[float, float]],
    duration: float,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> list[Segment]:
    """Turn cut times (or rough segments) into segments that tile ``[0, duration]`` exactly.

    Cut times outside ``(0, duration)`` are ignored; segments contribute their starts and ends as cuts.
    Segments shorter than ``min_seconds`` are merged into their shorter neighbour (repeatedly, shortest
    first) unless the whole video is shorter; segments longer than ``max_seconds`` are split into equal
    parts. The first segment starts at 0.0, the last ends at ``duration`` and each end equals the next
    start (the same float). ``max_seconds`` must be at least ``2 * min_seconds`` so splitting never
    creates a segment below the minimum.
    """
    duration = check_duration(duration)
    min_seconds, max_seconds = check_limits(min_seconds, max_seconds)
    points: list[float] = []
    for item in cuts_or_segments:
        if isinstance(item, Segment):
            points += [item.start, item.end]
        elif isinstance(item, (tuple, list)):
            points += [float(item[0]), float(item[1])]
        else:
            points.append(float(item))
    inner = sorted({p for p in points if math.isfinite(p) and EPS < p < duration - EPS})
    bounds = [0.0]
    for p in inner:  # drop cuts closer than EPS to the previous one
        if p - bounds[-1] > EPS:
            bounds.append(p)
    if duration - bounds[-1] <= EPS and len(bounds) > 1:
        bounds.pop()
    bounds.append(duration)

    return to_segments(normalize_bounds(bounds, min_seconds, max_seconds))


def check_limits(min_seconds: float, max_seconds: float | None) -> tuple[float, float | None]:
    min_seconds = float(min_seconds or 0.0)
    if not math.isfinite(min_seconds) or min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds!r}")
    if max_seconds is not None:
        max_seconds = float(max_seconds)
        if not (max_seconds > 0) or math.isnan(max_seconds):
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
        check_seconds(max_seconds, "max_seconds")
        if max_seconds < 2 * min_seconds:
            raise ValueError(
                f"max_seconds ({max_seconds}) must be at least twice min_seconds ({min_seconds}) so that "
                "splitting long segments cannot produce segments below the minimum"
            )
    return min_seconds, max_seconds


def normalize_bounds(bounds: list[float], min_seconds: float, max_seconds: float | None,
                     scores: CutScores | None = None) -> list[float]:
    """Merge short and split long segments of the sorted, distinct ``bounds`` (first and last kept); long
    ones are split at their strongest cut candidates in ``scores`` first (see :func:`split_long`)."""
    if min_seconds > 0 and len(bounds) > 2:
        bounds = merge_short(bounds, min_seconds)
    if max_seconds is not None:
        bounds = split_long(bounds, max_seconds, scores, min_seconds)
    return bounds


class CutScores:
    """A detector's per-frame cut score (how much frame ``t`` differs from the one before), in time order.

    Long scenes are split where these peak: a cut too weak for the detector's threshold (a small colour
    or light change) is still a better place to split than the midpoint. A candidate counts only when
    its score is at least ``peak_ratio`` times the median score of the scene it would split (steady
    motion has no peak, and the scene is then split evenly).
    """

    def __init__(self, peak_ratio: float = 2.0):
        self.peak_ratio = float(peak_ratio)
        self.times: list[float] = []
        self.scores: list[float] = []

    def add(self, t: float, score: float) -> None:
        t, score = float(t), float(score)
        if not (math.isfinite(t) and math.isfinite(score)):
            return
        if self.times and t <= self.times[-1]:  # out of order or repeated: keep the order sorted
            i = bisect.bisect_left(self.times, t)
            if i < len(self.times) and self.times[i] == t:
                self.scores[i] = score
                return
            self.times.insert(i, t)
            self.scores.insert(i, score)
            return
        self.times.append(t)
        self.scores.append(score)

    def strongest(self, a: float, b: float, margin: float) -> float | None:
        """The time of the strongest candidate inside ``(a, b)`` at least ``margin`` from both ends, or
        None when no frame there peaks above the scene's median score."""
        i, j = bisect.bisect_left(self.times, a + EPS), bisect.bisect_right(self.times, b - EPS)
        lo = bisect.bisect_left(self.times, a + margin - EPS)
        hi = bisect.bisect_right(self.times, b - margin + EPS)
        if hi <= lo:
            return None
        inside = np.asarray(self.scores[i:j], dtype=np.float64)
        window = np.asarray(self.scores[lo:hi], dtype=np.float64)
        k = int(np.argmax(window))
        best = float(window[k])
        if best <= 0.0 or best < self.peak_ratio * float(np.median(inside)):
            return None
        return self.times[lo + k]


def to_segments(bounds: list[float]) -> list[Segment]:
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def merge_short(bounds: list[float], min_seconds: float) -> list[float]:
    """Repeatedly merge the shortest segment below ``min_seconds`` (leftmost on ties) into its shorter
    neighbour (the left one on ties); O(n log n) with a heap over a linked list of segments."""
    n = len(bounds) - 1
    start = list(bounds[:-1])
    end = list(bounds[1:])
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    alive = [True] * n
    heap = [(end[i] - start[i], i) for i in range(n)]
    heapq.heapify(heap)
    count = n
    while heap and count > 1:
        length, i = heapq.heappop(heap)
        if not alive[i] or length != end[i] - start[i]:
            continue  # stale entry
        if length >= min_seconds - EPS:
            break
        p, q = prev[i], nxt[i]
        if p < 0:
            left = i
        elif q < 0:
            left = p
        else:
            left = p if end[p] - start[p] <= end[q] - start[q] else i
        right = nxt[left]
        end[left] = end[right]  # merge right into left
        alive[right] = False
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        count -= 1
        heapq.heappush(heap, (end[left] - start[left], left))
    return [start[i] for i in range(n) if alive[i]] + [bounds[-1]]


def split_long(bounds: list[float], max_seconds: float, scores: CutScores | None = None,
               min_seconds: float = 0.0) -> list[float]:
    """Split every segment longer than ``max_seconds``: at its strongest cut candidate in ``scores``
    (leaving both parts at least ``min_seconds`` long), again in each part, and evenly where no
    candidate is left."""
    out = [bounds[0]]
    check_count(len(bounds) - 1 + math.ceil((bounds[-1] - bounds[0]) / max_seconds), bounds[-1])
    margin = max(min_seconds, MIN_SEGMENT_SECONDS)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        out += _split_span(a, b, max_seconds, scores, margin)
        out.append(b)
    return out


def _split_span(a: float, b: float, max_seconds: float, scores: CutScores | None,
                margin: float) -> list[float]:
    """The inner bounds that cut ``[a, b]`` into parts no longer than ``max_seconds``."""
    inner: list[float] = []
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        if y - x <= max_seconds + 1e-9:
            continue
        t = scores.strongest(x, y, margin) if scores is not None else None
        if t is None:
            k = max(1, math.ceil((y - x) / max_seconds - 1e-9))
            inner += [x + (y - x) * i / k for i in range(1, k)]
            continue
        inner.append(t)
        todo += [(x, t), (t, y)]
    return sorted(inner)


def fixed_segments(duration: float, seconds: float) -> list[Segment]:
    """Spans ``[k * seconds, (k + 1) * seconds)`` covering ``[0, duration]``, the last one shorter."""
    duration = check_duration(duration)
    n = max(1, math.ceil(duration / seconds - 1e-9))
    check_count(n, duration)
    bounds = [k * seconds for k in range(n)] + [duration]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(n)]
