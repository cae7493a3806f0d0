"""Moments: segment hits of one query assembled into spans of video (pure: hits in, moments out).

A segment is one cut of a video (fixed or a scene); what a user looks for often spans several (a 6 s
scene cut into 2 s segments), or part of one. :func:`assemble` turns ranked segment hits into
:class:`~maxsim.types.Moment` objects:

1. **Merge.** The best hit not yet used seeds a moment; the moment grows over segments of the same video
   that touch or overlap it (a gap of at most ``gap`` seconds) and score within ``margin`` of the seed
   (``score >= seed - margin * |seed|``), until none is left. Each hit joins one moment at most; a weaker
   segment between two good ones splits them (they do not touch). A seed scoring 0 or less (nothing
   matched) stays a moment of its own segment.
2. **Refine.** A moment's ends come from the frames that carried the match: in its first and last segment,
   the frames whose own MaxSim score (``Hit.frame_scores``) is within ``margin`` of the seed's best frame
   count as matching; the moment starts half way between the last non-matching frame and the first
   matching one (the segment's start when the first frame matches), and ends likewise. A hit without frame
   scores keeps its segment's bounds.
3. **Temporal non-maximum suppression.** A moment overlapping a better moment of the same video by a
   temporal IoU above ``nms_iou`` is dropped, so each moment is returned once.

``group="video"`` keeps the best moment of each video; ``group="segments"`` makes each hit a moment of
its own (no merging, no suppression), for front ends that show both the same way. Merging scans only the
hits that start near a moment (bisect); suppression compares each moment with those kept (at most k).
No index access.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence

from maxsim.types import Hit, Moment

GROUPS = ("segments", "moments", "video")


def check_group(group: str) -> str:
    """``group`` checked: ``"segments"``, ``"moments"`` or ``"video"`` (ValueError naming it otherwise)."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(map(repr, GROUPS))}, got {group!r}")
    return group


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans (0 when they do not meet)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def _within(score: float, best: float, margin: float) -> bool:
    return score >= best - margin * abs(best)


def _refine(first: Hit, last: Hit, best_frame: float, margin: float) -> tuple[float, float]:
    """The moment's [start, end) from the matching frames of its first and last segments."""
    start, end = first.start, last.end
    times, fs = first.frame_times, first.frame_scores
    if times and len(fs) == len(times):
        hit = [i for i, s in enumerate(fs) if _within(s, best_frame, margin)]
        if hit and hit[0] > 0:
            start = max(first.start, (times[hit[0] - 1] + times[hit[0]]) / 2)
    times, fs = last.frame_times, last.frame_scores
    if times and len(fs) == len(times):
        hit = [i for i, s in enumerate(fs) if _within(s, best_frame, margin)]
        if hit and hit[-1] < len(times) - 1:
            end = min(last.end, (times[hit[-1]] + times[hit[-1] + 1]) / 2)
    if end <= start:  # the matching frames disagree with the segments' order: keep the segments' span
        start, end = first.start, last.end
    return float(start), float(end)


def assemble(hits: Sequence[Hit], k: int | None = None, *, margin: float = 0.1, gap: float = 0.05,
             nms_iou: float = 0.5, group: str = "moments",
             thumbnail: Callable[[str, float], bytes | None] | None = None) -> list[Moment]:
    """The moments of ranked segment ``hits`` (see the module docstring), best first, at most ``k``.

    ``thumbnail(video, time)``, when given, makes each moment's thumbnail from its best frame (called for
    the moments returned only); otherwise, or when it returns None, the best segment's thumbnail is used.
    """
    check_group(group)
    if not 0 <= margin <= 1:
        raise ValueError(f"margin must be between 0 and 1 (a fraction of the best score), got {margin!r}")
    if not 0 < nms_iou <= 1:
        raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou!r}")
    by_video: dict[str, list[Hit]] = {}
    for h in hits:
        by_video.setdefault(h.video, []).append(h)
    starts: dict[str, list[float]] = {}
    longest: dict[str, float] = {}
    for v, row in by_video.items():
        row.sort(key=lambda h: (h.start, h.end))
        starts[v] = [h.start for h in row]
        longest[v] = max(h.end - h.start for h in row)
    used: set[int] = set()
    moments: list[Moment] = []
    for seed in sorted(hits, key=lambda h: -h.score):
        if id(seed) in used:
            continue
        row, st, reach = by_video[seed.video], starts[seed.video], longest[seed.video] + gap
        used.add(id(seed))
        members, span = [seed], [seed.start, seed.end]
        # a seed that matched nothing (MaxSim <= 0) does not gather other misses; "segments" never merges
        grown = seed.score > 0 and group != "segments"
        while grown:  # add hits that touch or overlap the moment and score within the margin
            grown = False
            # only hits starting within reach of the span can touch it (bisect: the scan stays local)
            for h in row[bisect_left(st, span[0] - reach):bisect_right(st, span[1] + gap)]:
                if id(h) not in used and h.start <= span[1] + gap and h.end >= span[0] - gap \
                        and _within(h.score, seed.score, margin):
                    used.add(id(h))
                    members.append(h)
                    span = [min(span[0], h.start), max(span[1], h.end)]
                    grown = True
        segs = sorted(members, key=lambda h: (h.start, h.end))
        best_frame = max(seed.frame_scores) if seed.frame_scores else seed.score
        last = max(segs, key=lambda h: h.end)
        start, end = _refine(segs[0], last, best_frame, margin)
        moments.append(Moment(video=seed.video, start=start, end=end, score=seed.score, segments=list(segs),
                              best_time=seed.best_time, thumbnail=seed.thumbnail))
    kept: list[Moment] = []
    # per video, the moments kept: their starts (sorted), the moments, the longest span
    spans: dict[str, tuple[list[float], list[Moment], list[float]]] = {}
    for m in moments:  # already best first
        ks, km, kl = spans.setdefault(m.video, ([], [], [0.0]))
        if group == "video" and km:
            continue
        # a kept moment overlapping m starts before m ends and at most the longest kept span before m starts
        near = km[bisect_left(ks, m.start - kl[0]):bisect_right(ks, m.end)]
        if group != "segments" and any(temporal_iou((o.start, o.end), (m.start, m.end)) > nms_iou
                                       for o in near):
            continue
        i = bisect_right(ks, m.start)
        ks.insert(i, m.start)
        km.insert(i, m)
        kl[0] = max(kl[0], m.end - m.start)
        kept.append(m)
        if k is not None and len(kept) >= k:
            break
    if thumbnail is not None:
        for m in kept:
            m.thumbnail = thumbnail(m.video, m.best_time) or m.thumbnail
    return kept


def find_moments(search: Callable[[int], list[Hit]], k: int, total: int, **assemble_args: object
                 ) -> list[Moment]:
    """:func:`assemble` over ``search(n)`` (the best n segment hits), widening n (from ``4 k + 16``,
    doubling, up to the ``total`` segments searched) until ``k`` moments are filled or nothing is left."""
    check_group(str(assemble_args.get("group", "moments")))  # before anything is searched
    thumbnail = assemble_args.pop("thumbnail", None)
    n = min(4 * k + 16, max(total, 1))
    while True:
        hits = search(n)
        moments = assemble(hits, k, **assemble_args)  # type: ignore[arg-type]
        if len(moments) >= k or len(hits) < n or n >= total:
            break
        n = min(2 * n, total)
    if thumbnail is not None:
        for m in moments:
            m.thumbnail = thumbnail(m.video, m.best_time) or m.thumbnail  # type: ignore[operator]
    return moments
