"""Ground-truth and predictions files, and the runner's config presets and overrides."""

from __future__ import annotations

import json

import pytest
from maxsim.bench.config import ConfigError, apply_overrides, load_preset, parse_value, resolve
from maxsim.bench.groundtruth import (
    GroundTruthError,
    load_ground_truth,
    load_predictions,
    prediction_record,
    write_ground_truth,
)
from maxsim.bench.metrics import GroundTruth

GOOD = {"qid": 1, "query": "a red scene", "vid": "v0", "duration": 30.0, "relevant_windows": [[2, 6.5]]}


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_qvhighlights_round_trip(tmp_path):
    items = [GroundTruth("7", "a red scene", "v0", [(2.0, 6.5), (10.0, 12.0)], 30.0)]
    p = write_ground_truth(tmp_path / "gt.jsonl", items)
    back = load_ground_truth(p)
    assert back[0].qid == "7" and back[0].vid == "v0" and back[0].windows == [(2.0, 6.5), (10.0, 12.0)]
    assert back[0].duration == 30.0


def test_qvhighlights_extra_fields_kept_and_blank_lines_skipped(tmp_path):
    rec = dict(GOOD, saliency_scores=[[1, 2, 3]])
    p = write_lines(tmp_path / "gt.jsonl", [json.dumps(rec), "", json.dumps(dict(GOOD, qid=2))])
    gts = load_ground_truth(p)
    assert [g.qid for g in gts] == ["1", "2"]
    assert gts[0].extra == {"saliency_scores": [[1, 2, 3]]}


@pytest.mark.parametrize(
    "bad, words",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "vid"}), "missing key(s) vid"),
        (json.dumps(dict(GOOD, relevant_windows=[[5, 2]])), "0 <= start <= end"),
        (json.dumps(dict(GOOD, relevant_windows=[[1, 2, 3]])), "[start, end]"),
        (json.dumps(dict(GOOD, relevant_windows=[])), "non-empty list"),
        (json.dumps(dict(GOOD, relevant_windows=[["a", 2]])), "finite number"),
        (json.dumps(dict(GOOD, relevant_windows=[[1, 40]])), "ends after the duration"),
        (json.dumps(dict(GOOD, query=3)), "query must be a string"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps(GOOD), "already used on line 1"),  # duplicate qid
    ],
)
def test_malformed_qvhighlights_names_file_and_line(tmp_path, bad, words):
    p = write_lines(tmp_path / "gt.jsonl", [json.dumps(GOOD), json.dumps(dict(GOOD, qid=2)), bad])
    with pytest.raises(GroundTruthError) as e:
        load_ground_truth(p, "qvhighlights")
    assert f"{p}:3:" in str(e.value)
    assert words in str(e.value)


def test_charades_adapter(tmp_path):
    p = write_lines(
        tmp_path / "charades.txt", ["3MSZA 24.3 30.4##person turn a light on.", "AB12 0 5.5##a man eats"]
    )
    gts = load_ground_truth(p)  # auto-detected
    assert [(g.qid, g.vid, g.windows, g.query) for g in gts] == [
        ("0", "3MSZA", [(24.3, 30.4)], "person turn a light on."),
        ("1", "AB12", [(0.0, 5.5)], "a man eats"),
    ]
    assert gts[0].duration is None


@pytest.mark.parametrize(
    "bad, words",
    [
        ("3MSZA 24.3 30.4 person", "no '##'"),
        ("3MSZA 24.3##person", "expected 'vid start end'"),
        ("3MSZA x 30.4##person", "must be numbers"),
        ("3MSZA 30 20##person", "0 <= start <= end"),
        ("3MSZA 1 2##   ", "empty sentence"),
    ],
)
def test_malformed_charades_names_line(tmp_path, bad, words):
    p = write_lines(tmp_path / "c.txt", ["3MSZA 24.3 30.4##person turn a light on.", "", bad])
    with pytest.raises(GroundTruthError, match=words) as e:
        load_ground_truth(p, "charades")
    assert f"{p}:3:" in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(GroundTruthError, match="does not exist"):
        load_ground_truth(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(GroundTruthError, match="holds no queries"):
        load_ground_truth(tmp_path / "empty.jsonl")


def test_predictions_round_trip_and_ranking(tmp_path):
    p = tmp_path / "pred.jsonl"
    rec = prediction_record("1", "q", [("a", 0, 1, 0.2), ("b", 1, 2, 0.9), ("c", 2, 3, 0.9)])
    p.write_text(json.dumps(rec) + "\n")
    preds = load_predictions(p)
    assert [r[0] for r in preds["1"]] == ["b", "c", "a"]  # by score, ties in written order
    p.write_text(json.dumps({"qid": 1, "predictions": [["a", 0, 1]]}) + "\n")
    with pytest.raises(GroundTruthError, match=r"pred.jsonl:1: a prediction must be"):
        load_predictions(p)


PRESETS = """
default_preset = "small"
[defaults]
sizes = [1, 2]
name = "x"
kw = {}
[defaults.sub]
a = 1
[small]
sizes = [3]
[small.sub]
b = 2
"""


def test_presets_merge_and_overrides(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(PRESETS)
    assert load_preset(f, None) == {"sizes": [1, 2], "name": "x", "kw": {}, "sub": {"a": 1}}
    cfg, src = resolve("search", config_file=str(f))
    assert src["preset"] == "small"
    assert cfg == {"sizes": [3], "name": "x", "kw": {}, "sub": {"a": 1, "b": 2}}
    cfg = apply_overrides(cfg, ["sizes=[10, 20]", "sub.a=5", "name=fixed:5", "kw.dim=64"])
    assert cfg["sizes"] == [10, 20] and cfg["sub"]["a"] == 5 and cfg["name"] == "fixed:5"
    assert cfg["kw"] == {"dim": 64}
    assert apply_overrides(cfg, ["sizes=7"])["sizes"] == [7]  # one value for a list key
    with pytest.raises(ConfigError, match="unknown config key 'sizez'.*sizes"):
        apply_overrides(cfg, ["sizez=1"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides(cfg, ["sizes"])
    with pytest.raises(ConfigError, match="no preset 'gpu'"):
        load_preset(f, "gpu")


def test_parse_value():
    assert parse_value("[1000, 10000]") == [1000, 10000]
    assert parse_value("true") is True
    assert parse_value("1.5") == 1.5
    assert parse_value('"quoted"') == "quoted"
    assert parse_value("scenes:content,threshold=30") == "scenes:content,threshold=30"


def test_repo_presets_all_load():
    for sub in ("kernel", "ingest", "search", "eval", "dataset"):
        cfg, src = resolve(sub)
        assert cfg, sub
        cfg, src = resolve(sub, "smoke")
        assert src["preset"] == "smoke"


def test_random_scenes_fill_the_time_and_follow_the_colours():
    from maxsim.testing.synthetic import COLORS, random_scenes

    scenes = random_scenes(3, seconds=30.0, scene_seconds=(2.0, 8.0))
    assert sum(s for s, _ in scenes) == pytest.approx(30.0)
    assert all(0 < s <= 8.0 for s, _ in scenes) and all(s >= 2.0 for s, _ in scenes[:-1])
    assert all(c in COLORS for _, c in scenes)
    # a cut always changes the colour
    assert all(a[1] != b[1] for a, b in zip(scenes, scenes[1:], strict=False))
    assert random_scenes(3, seconds=30.0, scene_seconds=(2.0, 8.0)) == scenes  # seeded

    fixed = random_scenes(0, scene_seconds=(1.0, 2.0), colours=["red", "teal", "red"], fps=10.0)
    assert [c for _, c in fixed] == ["red", "teal", "red"]
    assert all(1.0 <= s <= 2.0 and round(s * 10) == pytest.approx(s * 10) for s, _ in fixed)
    with pytest.raises(ValueError, match="scene_seconds"):
        random_scenes(0, seconds=5.0, scene_seconds=(3.0, 1.0))
