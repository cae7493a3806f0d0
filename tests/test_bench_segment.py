"""maxsim-bench segment: exact cut P/R/F1 on hand-made cut lists, and the command on a generated video."""

from __future__ import annotations

import json

import pytest
from maxsim.bench.cli import main
from maxsim.bench.segment_bench import match_cuts, measure_spec, prf, scores


def test_match_cuts_one_to_one_closest_first():
    assert match_cuts([1.0, 2.0, 3.0], [1.1, 2.4, 5.0], 0.25) == 1
    assert match_cuts([1.0, 2.0, 3.0], [1.1, 2.4, 5.0], 0.5) == 2
    # two detections near one reference cut: only one matches
    assert match_cuts([1.0, 1.1], [1.05], 0.25) == 1
    # closest pairs first: 1.2 takes 1.25, so 1.0 can still take 0.8
    assert match_cuts([1.0, 1.2], [0.8, 1.25], 0.25) == 2
    assert match_cuts([], [1.0], 1.0) == 0 and match_cuts([1.0], [], 1.0) == 0


def test_prf_and_micro_scores():
    assert prf(2, 4, 5) == pytest.approx({"precision": 0.5, "recall": 0.4, "f1": 2 * 0.5 * 0.4 / 0.9})
    assert prf(0, 0, 0) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}  # nothing claimed, nothing to find
    assert prf(0, 3, 0)["precision"] == 0.0 and prf(0, 0, 3)["recall"] == 0.0
    ref = {"a": [1.0, 5.0], "b": [], "c": [2.0]}
    pred = {"a": [1.2, 7.0], "b": [3.0], "c": [2.6]}
    s = scores(pred, ref, [0.25, 1.0])
    assert s["0.25"] == pytest.approx({"tp": 1, "pred": 4, "ref": 3, "precision": 0.25, "recall": 1 / 3,
                                       "f1": 2 * 0.25 / 3 / (0.25 + 1 / 3)})
    assert (s["1"]["tp"], s["1"]["precision"], s["1"]["recall"]) == (2, 0.5, 2 / 3)


def test_scene_specs_measured_without_splitting():
    assert measure_spec("scenes").max_seconds is None
    assert measure_spec("scenes:content,threshold=20").max_seconds is None
    assert measure_spec("fixed:10").name == "fixed(seconds=10)"
    with pytest.raises(ValueError, match="'nope'"):
        measure_spec("nope")


def test_segment_command_on_generated_video(tmp_path):
    out = tmp_path / "run"
    assert main(["segment", "--preset", "smoke", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["results"]
    by = {r["spec"]: r for r in res["specs"]}
    (video,) = res["videos"]
    assert len(video["reference"]) == 3
    assert by["scenes"]["f1@0.25"] == 1.0  # distinct colours: every cut found, nothing else
    assert by["fixed:2"]["p@0.25"] < 1.0  # fixed spans are not cuts
    assert all(r["s_per_s"] > 0 for r in res["specs"])
    assert (out / "segment_f1.png").is_file() and "Cut detection" in (out / "results.md").read_text()
    assert main(["segment", "--preset", "smoke", "--set", 'segmenters=["scenes:nodetector"]',
                 "--out", str(tmp_path / "bad")]) == 2
