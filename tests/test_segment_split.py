"""Long scenes split at their strongest cut candidate (a change too weak to be a cut), evenly otherwise;
and the segmenter chosen on ``maxsim ingest`` (``--segmenter SPEC``, ``--scenes[=SPEC]``)."""

from __future__ import annotations

import json

import pytest

from maxsim import cli
from maxsim.media.segment import SceneSegmenter, load_segmenter
from maxsim.media.spans import CutScores, normalize_bounds, split_long
from maxsim.testing.synthetic import write_video
from maxsim.types import Segment

ENC = "tests.color_encoder:ColorEncoder"


def _scores(peaks: dict[float, float], duration: float = 10.0, fps: float = 10.0) -> CutScores:
    s = CutScores()
    for i in range(1, round(duration * fps)):
        t = i / fps
        s.add(t, peaks.get(round(t, 6), 1.0))
    return s


def test_split_long_at_candidates_then_evenly():
    # the 10 s span splits at its peak (3.0), then the 7 s remainder, without a peak, evenly
    assert split_long([0.0, 10.0], 4.0, _scores({3.0: 9.0}), 1.0) == [0.0, 3.0, 6.5, 10.0]
    # two peaks: the stronger first, then the other inside the part still too long
    assert split_long([0.0, 10.0], 4.0, _scores({2.5: 5.0, 6.0: 9.0}), 1.0) == [0.0, 2.5, 6.0, 10.0]
    # no peak (flat scores), no scores: the even split as before
    assert split_long([0.0, 10.0], 4.0, _scores({}), 1.0) == [0.0, 10 / 3, 20 / 3, 10.0]
    assert split_long([0.0, 10.0], 4.0) == [0.0, 10 / 3, 20 / 3, 10.0]
    # a peak closer to an end than min_seconds is not taken (it would leave a part below the minimum)
    assert split_long([0.0, 10.0], 6.0, _scores({0.5: 50.0}), 1.0) == [0.0, 5.0, 10.0]
    # a peak below peak_ratio x the median of the span is not a candidate
    assert split_long([0.0, 10.0], 6.0, _scores({3.0: 1.5}), 1.0) == [0.0, 5.0, 10.0]
    # segments within the limit are left alone, whatever the scores
    assert normalize_bounds([0.0, 4.0, 8.0], 1.0, 5.0, _scores({2.0: 99.0})) == [0.0, 4.0, 8.0]


def test_cut_scores_keep_time_order():
    s = CutScores()
    for t, v in [(0.2, 1.0), (0.1, 2.0), (0.3, 5.0), (0.2, 3.0), (float("nan"), 9.0)]:
        s.add(t, v)
    assert s.times == [0.1, 0.2, 0.3] and s.scores == [2.0, 3.0, 5.0]


@pytest.fixture(scope="module")
def weak_cut_video(tmp_path_factory):
    # one 7 s "scene" with a weak colour change at 2.6 s, too small for the detectors' thresholds
    path = tmp_path_factory.mktemp("weak") / "weak.mp4"
    return write_video(path, [(2.6, (100, 110, 100)), (4.4, (110, 110, 100))])


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_long_scene_split_at_weak_cut_not_midpoint(weak_cut_video, detector):
    no_limit = SceneSegmenter(detector, min_seconds=0, max_seconds=None).segment(weak_cut_video)
    assert no_limit == [Segment(0.0, 7.0)]  # the change is not a detected cut
    segs = SceneSegmenter(detector, min_seconds=1.0, max_seconds=5.0).segment(weak_cut_video)
    assert [s.start for s in segs] == [0.0, pytest.approx(2.6, abs=0.051)]  # not 3.5, the midpoint
    assert segs[-1].end == 7.0


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _recorded_segmenter(capsys, idx) -> str:
    manifest = json.loads((idx / "manifest.json").read_text())
    (entry,) = manifest["videos"].values()
    return json.loads(entry["settings"])["segmenter"]


def test_ingest_segmenter_flags(tmp_path, capsys, weak_cut_video):
    spec = "scenes:content,max_seconds=5"
    idx = tmp_path / "a"
    code, _, err = run(capsys, "ingest", idx, weak_cut_video, "--segmenter", spec, "--encoder", ENC, "-q")
    assert code == 0, err
    assert _recorded_segmenter(capsys, idx) == load_segmenter(spec).name
    code, out, _ = run(capsys, "info", idx, "--json")
    assert json.loads(out)["segments"] == 2  # split at the weak cut

    idx = tmp_path / "b"  # bare --scenes: the default scenes spec
    code, _, err = run(capsys, "ingest", idx, weak_cut_video, "--scenes", "--encoder", ENC, "-q")
    assert code == 0, err
    assert _recorded_segmenter(capsys, idx) == load_segmenter("scenes").name

    idx = tmp_path / "c"  # --scenes=SPEC, with or without the scenes: prefix
    code, _, err = run(capsys, "ingest", idx, weak_cut_video, "--scenes=histogram,threshold=0.3",
                       "--encoder", ENC, "-q")
    assert code == 0, err
    assert _recorded_segmenter(capsys, idx) == load_segmenter("scenes:histogram,threshold=0.3").name


@pytest.mark.parametrize("flags, named", [
    (["--segmenter", "bogus:1"], "'bogus:1'"),
    (["--segmenter", "scenes:content,nope=1"], "'scenes:content,nope=1'"),
    (["--scenes=nodetector"], "'nodetector'"),
    (["--segmenter", "fixed:-3"], "'fixed:-3'"),
])
def test_ingest_bad_segmenter_is_a_clear_error(tmp_path, capsys, weak_cut_video, flags, named):
    idx = tmp_path / "idx"
    code, _, err = run(capsys, "ingest", idx, weak_cut_video, *flags, "--encoder", ENC, "-q")
    assert code == 2 and named in err and "error:" in err
    assert not (idx / "manifest.json").exists()  # nothing created


def test_ingest_scenes_swallowing_a_video_path_says_so(tmp_path, capsys, weak_cut_video):
    code, _, err = run(capsys, "ingest", tmp_path / "idx", weak_cut_video, "--scenes", weak_cut_video,
                       "--encoder", ENC, "-q")
    assert code == 2 and "after the videos" in err
