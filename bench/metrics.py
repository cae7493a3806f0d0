"""Moment-retrieval metrics: pure functions over ranked predictions and ground-truth windows.

A prediction list is one query's ranked moments, best first, each ``(video, start, end, score)``; its order
is the ranking (equal scores keep the order they were written in). A ground truth names one video and one
or more relevant windows ``[(start, end), ...]`` in it. A prediction is correct at IoU threshold ``t`` when
its video is the ground truth's and its temporal IoU with some relevant window is ``>= t``.

All rates are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Window = tuple[float, float]
Prediction = tuple[str, float, float, float]  # video, start, end, score

# IoU thresholds of the mAP: 0.5, 0.55, ..., 0.95 (QVHighlights' moment-retrieval mAP).
MAP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
# A threshold met to within float rounding counts as met (0.1 + 0.2 style sums).
_EPS = 1e-9


@dataclass
class GroundTruth:
    """One query: its text, the video it is about and the windows of that video that answer it."""

    qid: str
    query: str
    vid: str
    windows: list[Window]
    duration: float | None = None
    extra: dict = field(default_factory=dict)


def temporal_iou(a: Window, b: Window) -> float:
    """Intersection over union of two time intervals; 0 when they do not overlap or both are empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def best_iou(window: Window, windows: Iterable[Window]) -> float:
    """The largest IoU of ``window`` with any of ``windows`` (0 for none)."""
    return max((temporal_iou(window, w) for w in windows), default=0.0)


def prediction_iou(pred: Prediction, gt: GroundTruth) -> float:
    """IoU of a prediction with the ground truth: 0 on another video, else its best window IoU."""
    if pred[0] != gt.vid:
        return 0.0
    return best_iou((pred[1], pred[2]), gt.windows)


def first_hit_rank(preds: Sequence[Prediction], gt: GroundTruth, threshold: float) -> int | None:
    """1-based rank of the first correct prediction at ``threshold``, or None if none is correct."""
    for rank, p in enumerate(preds, 1):
        if p[0] == gt.vid and prediction_iou(p, gt) >= threshold - _EPS:
            return rank
    return None


def first_video_rank(preds: Sequence[Prediction], vid: str) -> int | None:
    """1-based rank of ``vid`` among the distinct videos of ``preds`` in order of first appearance."""
    seen: list[str] = []
    for p in preds:
        if p[0] not in seen:
            seen.append(p[0])
            if p[0] == vid:
                return len(seen)
    return None


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Fraction of queries whose first correct rank is ``<= k`` (None counts as a miss)."""
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def average_precision(preds: Sequence[Prediction], gt: GroundTruth, threshold: float) -> float:
    """Average precision of one query's ranking at one IoU threshold.

    Each prediction, in rank order, is a true positive when it is on the ground-truth video and reaches
    ``threshold`` with a relevant window not matched by a better-ranked prediction (it takes the unmatched
    window it overlaps most); everything else is a false positive. AP is the area under the interpolated
    precision-recall curve (precision made monotone from the right), recall counted against all relevant
    windows: the ActivityNet/QVHighlights definition.
    """
    n_gt = len(gt.windows)
    if n_gt == 0 or not preds:
        return 0.0
    matched = [False] * n_gt
    tp = np.zeros(len(preds))
    for i, p in enumerate(preds):
        if p[0] != gt.vid:
            continue
        ious = [temporal_iou((p[1], p[2]), w) for w in gt.windows]
        for j in sorted(range(n_gt), key=lambda j: -ious[j]):
            if ious[j] < threshold - _EPS:
                break
            if not matched[j]:
                matched[j] = True
                tp[i] = 1
                break
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(preds) + 1)
    recall = ctp / n_gt
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def evaluate(
    predictions: Mapping[str, Sequence[Prediction]],
    ground_truth: Sequence[GroundTruth],
    ks: Sequence[int] = (1, 5, 10),
    ious: Sequence[float] = (0.3, 0.5, 0.7),
    map_thresholds: Sequence[float] = MAP_THRESHOLDS,
) -> dict:
    """All moment-retrieval metrics over the ground-truth queries (a query without predictions misses).

    Returns ``recall`` (``"R@k IoU=t"`` -> corpus-level rate), ``video_recall`` (``"R@k"`` -> rate at which
    the right video is among the first k distinct videos), ``map`` (``{"mean": ..., "0.5": ..., ...}``),
    ``mean_iou_top1`` (IoU of each query's top prediction, 0 on a wrong video, averaged), ``n_queries`` and
    ``per_query`` (first-hit ranks and top-1 IoU of each query).
    """
    per_query = []
    for gt in ground_truth:
        preds = list(predictions.get(gt.qid, ()))
        per_query.append(
            {
                "qid": gt.qid,
                "hit_rank": {f"{t:g}": first_hit_rank(preds, gt, t) for t in ious},
                "video_rank": first_video_rank(preds, gt.vid),
                "top1_iou": prediction_iou(preds[0], gt) if preds else 0.0,
                "ap": {f"{t:g}": average_precision(preds, gt, t) for t in map_thresholds},
            }
        )
    n = len(per_query)
    recall = {
        f"R@{k} IoU={t:g}": recall_at_k([q["hit_rank"][f"{t:g}"] for q in per_query], k)
        for t in ious
        for k in ks
    }
    video_recall = {f"R@{k}": recall_at_k([q["video_rank"] for q in per_query], k) for k in ks}
    maps = {
        f"{t:g}": (float(np.mean([q["ap"][f"{t:g}"] for q in per_query])) if n else 0.0)
        for t in map_thresholds
    }
    return {
        "n_queries": n,
        "recall": recall,
        "video_recall": video_recall,
        "map": {"mean": float(np.mean(list(maps.values()))) if maps else 0.0, **maps},
        "mean_iou_top1": float(np.mean([q["top1_iou"] for q in per_query])) if n else 0.0,
        "per_query": per_query,
    }
