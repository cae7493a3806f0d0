"""Cues onto segments and the fusion of visual and transcript scores, against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxsim.transcripts import Fusion, best_cue_per_segment, cue_segment_pairs, fuse, fuse_scores
from maxsim.transcripts.fusion import normalize_scores, rank_scores


def _overlaps(a, b, s, e) -> bool:
    return (s <= a < e) if a >= b else (a < e and b > s)


def test_cues_map_onto_the_segments_they_overlap():
    seg_s, seg_e = [0.0, 10.0, 20.0], [10.0, 20.0, 30.0]
    cues = [(1.0, 2.0), (9.0, 11.0), (10.0, 10.0), (20.0, 20.5), (30.0, 31.0), (-2.0, 0.0), (5.0, 25.0)]
    ci, si = cue_segment_pairs([c[0] for c in cues], [c[1] for c in cues], seg_s, seg_e)
    assert list(zip(ci.tolist(), si.tolist(), strict=True)) == [
        (0, 0), (1, 0), (1, 1), (2, 1), (3, 2), (6, 0), (6, 1), (6, 2)]


def test_best_cue_per_segment_and_ties():
    seg_s, seg_e = [0.0, 10.0, 20.0], [10.0, 20.0, 30.0]
    starts, ends = [1.0, 5.0, 12.0, 14.0], [2.0, 11.0, 13.0, 15.0]
    scores = [0.2, 0.9, 0.5, 0.5]
    best, cue = best_cue_per_segment(scores, starts, ends, seg_s, seg_e)
    assert best[:2].tolist() == [0.9, 0.9] and np.isnan(best[2])  # cue 1 spans the cut at 10 s
    assert cue.tolist() == [1, 1, -1]
    best, cue = best_cue_per_segment([0.2, 0.1, 0.5, 0.5], starts, ends, seg_s, seg_e)
    assert cue.tolist() == [0, 2, -1]  # equal scores: the earlier cue
    with pytest.raises(ValueError, match="3 cue scores for 4 cues"):
        best_cue_per_segment([1, 2, 3], starts, ends, seg_s, seg_e)
    best, cue = best_cue_per_segment([], [], [], seg_s, seg_e)
    assert np.isnan(best).all() and (cue == -1).all()


_times = st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 1))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_times, st.floats(0, 20).map(lambda x: round(x, 1))), max_size=15),
       st.lists(st.tuples(_times, st.floats(0.1, 30).map(lambda x: round(x, 1))), min_size=1, max_size=8),
       st.booleans())
def test_pairs_equal_brute_force(cues, segs, contiguous):
    if contiguous:  # what a segmenter makes: back to back, in any order in the index
        bounds = sorted({round(s, 1) for s, _ in segs} | {100.0})
        segs = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False)][::-1] or [(0.0, 1.0)]
    else:
        segs = [(s, s + d) for s, d in segs]
    cue_s = [s for s, _ in cues]
    cue_e = [s + d for s, d in cues]
    ci, si = cue_segment_pairs(cue_s, cue_e, [s for s, _ in segs], [e for _, e in segs])
    want = [(i, j) for i in range(len(cues)) for j in range(len(segs))
            if _overlaps(cue_s[i], cue_e[i], segs[j][0], segs[j][1])]
    assert list(zip(ci.tolist(), si.tolist(), strict=True)) == want


def test_normalise_and_rank():
    x = np.array([3.0, np.nan, 1.0, 3.0, 2.0])
    n = normalize_scores(x)
    assert n[[0, 2, 3, 4]].tolist() == [1.0, 0.0, 1.0, 0.5] and np.isnan(n[1])
    assert normalize_scores(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]
    r = rank_scores(x)
    assert r[[0, 2, 3, 4]].tolist() == [1, 4, 1, 3] and np.isnan(r[1])
    assert np.isnan(normalize_scores(np.array([np.nan]))).all()


def test_weighted_fusion_formula():
    visual = np.array([10.0, 8.0, 6.0, np.nan])
    transcript = np.array([np.nan, 0.2, 0.9, 0.5])
    fused = fuse_scores({"visual": visual, "transcript": transcript}, {"visual": 0.3, "transcript": 0.7})
    v = np.array([1.0, 0.5, 0.0, 0.0])
    t = np.array([0.0, 0.0, 1.0, (0.5 - 0.2) / 0.7])
    assert fused == pytest.approx(0.3 * v + 0.7 * t)


def test_rrf_formula_and_ties():
    visual = np.array([10.0, 8.0, 8.0, np.nan])
    transcript = np.array([np.nan, 0.9, 0.2, 0.5])
    fused = fuse_scores({"visual": visual, "transcript": transcript}, None, method="rrf", rrf_k=60)
    want = [1 / 61, 1 / 62 + 1 / 61, 1 / 62 + 1 / 63, 1 / 62]
    assert fused == pytest.approx(want)
    only = fuse_scores({"transcript": transcript})
    assert only[1:].tolist() == [0.9, 0.2, 0.5] and only[0] == -np.inf  # one channel: scores as they are


def test_fuse_dicts_rank_and_carry_channel_scores():
    visual = {("a.mp4", 0): 9.0, ("a.mp4", 1): 7.5, ("b.mp4", 0): 7.0}
    transcript = {("a.mp4", 1): 0.8, ("b.mp4", 3): 0.6}
    out = fuse({"visual": visual, "transcript": transcript}, Fusion(transcript_weight=0.5))
    assert [f.key for f in out][:2] == [("a.mp4", 1), ("a.mp4", 0)]
    top = out[0]
    assert top.scores == {"visual": 7.5, "transcript": 0.8}
    assert top.score == pytest.approx(0.5 * 0.25 + 0.5 * 1.0)
    assert out[1].score == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert out[-1].key == ("b.mp4", 3) and out[-1].scores == {"transcript": 0.6}
    visual_only = fuse({"visual": visual, "transcript": transcript}, Fusion(transcript_weight=0.0))
    assert [f.key for f in visual_only] == [("a.mp4", 0), ("a.mp4", 1), ("b.mp4", 0), ("b.mp4", 3)]
    rrf = fuse({"visual": visual, "transcript": transcript}, Fusion(method="rrf"))
    assert rrf[0].key == ("a.mp4", 1)  # found by both channels
    assert fuse({"visual": {}, "transcript": {}}) == []


def test_fusion_settings_are_checked():
    with pytest.raises(ValueError, match="fusion method"):
        Fusion(method="max")
    with pytest.raises(ValueError, match=r"transcript_weight must be in \[0, 1\]"):
        Fusion(transcript_weight=1.5)
    with pytest.raises(ValueError, match="differ in length"):
        fuse_scores({"visual": np.zeros(2), "transcript": np.zeros(3)})
    with pytest.raises(ValueError, match="no scores"):
        fuse_scores({"visual": np.zeros(2)}, {"audio": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        fuse_scores({"visual": np.zeros(2), "transcript": np.zeros(2)}, {"visual": -1.0})
    assert Fusion(transcript_weight=0.25).weights == {"visual": 0.75, "transcript": 0.25}
