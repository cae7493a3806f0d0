"""Moment-retrieval metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import pytest
from maxsim.bench.metrics import (
    MAP_THRESHOLDS,
    GroundTruth,
    average_precision,
    evaluate,
    first_hit_rank,
    first_video_rank,
    recall_at_k,
    temporal_iou,
)

from maxsim.summary import percentiles


def gt(qid="q", vid="a", windows=((10.0, 20.0),)):
    return GroundTruth(qid, "text", vid, [tuple(w) for w in windows], 60.0)


def test_iou_cases():
    assert temporal_iou((0, 10), (0, 10)) == 1.0
    assert temporal_iou((0, 10), (10, 20)) == 0.0  # touching: no overlap
    assert temporal_iou((0, 10), (20, 30)) == 0.0
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert temporal_iou((0, 10), (0, 5)) == 0.5
    assert temporal_iou((2, 4), (0, 10)) == pytest.approx(0.2)
    assert temporal_iou((3, 3), (3, 3)) == 0.0  # empty windows


def test_perfect_ranking_scores_one_everywhere():
    g = [gt("1", "a", [(0, 10)]), gt("2", "b", [(5, 9), (20, 30)])]
    preds = {"1": [("a", 0, 10, 0.9), ("b", 0, 10, 0.1)], "2": [("b", 20, 30, 0.8), ("b", 5, 9, 0.7)]}
    m = evaluate(preds, g)
    assert all(v == 1.0 for v in m["recall"].values())
    assert all(v == 1.0 for v in m["video_recall"].values())
    assert m["map"]["mean"] == 1.0
    assert m["mean_iou_top1"] == 1.0


def test_no_overlap_scores_zero():
    g = [gt("1", "a", [(10, 20)])]
    preds = {"1": [("a", 30, 40, 0.9), ("a", 0, 10, 0.8), ("b", 10, 20, 0.7)]}  # right span, wrong video last
    m = evaluate(preds, g)
    assert all(v == 0.0 for v in m["recall"].values())
    assert m["map"]["mean"] == 0.0
    assert m["mean_iou_top1"] == 0.0
    assert m["video_recall"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}  # the video itself is found first


def test_partial_iou_passes_low_thresholds_only():
    g = gt("1", "a", [(10, 20)])
    pred = [("a", 12, 20, 1.0)]  # IoU 0.8
    assert first_hit_rank(pred, g, 0.7) == 1
    pred = [("a", 15, 25, 1.0)]  # IoU 5/15 = 0.333
    assert first_hit_rank(pred, g, 0.3) == 1
    assert first_hit_rank(pred, g, 0.5) is None
    m = evaluate({"1": pred}, [g])
    assert m["recall"]["R@1 IoU=0.3"] == 1.0
    assert m["recall"]["R@1 IoU=0.5"] == 0.0
    assert m["mean_iou_top1"] == pytest.approx(1 / 3)
    assert m["map"]["mean"] == 0.0  # below 0.5 at every mAP threshold


def test_threshold_met_exactly_counts():
    g = gt("1", "a", [(0, 10)])
    assert first_hit_rank([("a", 0, 5, 1.0)], g, 0.5) == 1  # IoU exactly 0.5
    # 0.7 reached exactly up to float rounding: (0, 7) vs (0, 10)
    assert first_hit_rank([("a", 0.0, 7.0, 1.0)], g, 0.7) == 1


def test_recall_at_k_uses_rank():
    g = [gt("1", "a"), gt("2", "a"), gt("3", "a"), gt("4", "a")]
    hit, miss = ("a", 10, 20, 0.5), ("a", 40, 50, 0.9)
    preds = {"1": [hit], "2": [miss, hit], "3": [miss] * 5 + [hit], "4": [miss] * 20}
    m = evaluate(preds, g, ks=(1, 2, 5, 10))
    assert m["recall"]["R@1 IoU=0.5"] == 0.25
    assert m["recall"]["R@2 IoU=0.5"] == 0.5
    assert m["recall"]["R@5 IoU=0.5"] == 0.5
    assert m["recall"]["R@10 IoU=0.5"] == 0.75
    assert recall_at_k([1, None, 3], 3) == pytest.approx(2 / 3)
    assert recall_at_k([], 1) == 0.0


def test_ties_keep_written_order():
    # Two predictions with the same score: the written order is the ranking.
    g = gt("1", "a", [(10, 20)])
    first_wrong = [("a", 40, 50, 0.5), ("a", 10, 20, 0.5)]
    first_right = [("a", 10, 20, 0.5), ("a", 40, 50, 0.5)]
    assert first_hit_rank(first_wrong, g, 0.5) == 2
    assert first_hit_rank(first_right, g, 0.5) == 1
    assert average_precision(first_wrong, g, 0.5) == 0.5
    assert average_precision(first_right, g, 0.5) == 1.0


def test_average_precision_by_hand():
    g = gt("1", "a", [(0, 10), (20, 30)])
    # ranks: hit, miss, hit -> precision 1 at recall .5, 2/3 at recall 1 -> AP = .5*1 + .5*2/3
    preds = [("a", 0, 10, 3), ("a", 40, 50, 2), ("a", 20, 30, 1)]
    assert average_precision(preds, g, 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # interpolation: miss, hit, hit -> precision .5 at r=.5, 2/3 at r=1; envelope makes the first 2/3
    preds = [("a", 40, 50, 3), ("a", 0, 10, 2), ("a", 20, 30, 1)]
    assert average_precision(preds, g, 0.5) == pytest.approx(2 / 3)
    # one window found twice: the duplicate is a false positive, the other window never found
    preds = [("a", 0, 10, 2), ("a", 0, 9, 1)]
    assert average_precision(preds, g, 0.5) == pytest.approx(0.5)
    # wrong video with the right times is a false positive
    assert average_precision([("b", 0, 10, 1)], g, 0.5) == 0.0
    assert average_precision([], g, 0.5) == 0.0


def test_map_averages_thresholds():
    g = gt("1", "a", [(0, 10)])
    preds = {"1": [("a", 0, 8, 1.0)]}  # IoU 0.8: AP 1 at 0.5..0.8, 0 at 0.85..0.95
    m = evaluate(preds, [g])
    assert MAP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert m["map"]["0.8"] == 1.0 and m["map"]["0.85"] == 0.0
    assert m["map"]["mean"] == pytest.approx(0.7)


def test_video_rank_counts_distinct_videos():
    preds = [("b", 0, 1, 9), ("b", 2, 3, 8), ("c", 0, 1, 7), ("a", 0, 1, 6)]
    assert first_video_rank(preds, "a") == 3
    assert first_video_rank(preds, "z") is None


def test_missing_predictions_count_as_misses():
    g = [gt("1", "a"), gt("2", "a")]
    m = evaluate({"1": [("a", 10, 20, 1.0)]}, g)
    assert m["recall"]["R@1 IoU=0.5"] == 0.5
    assert m["n_queries"] == 2


def test_percentiles():
    p = percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert p["p50"] == 5.5
    assert p["mean"] == 5.5
    assert p["p99"] == pytest.approx(9.91)
