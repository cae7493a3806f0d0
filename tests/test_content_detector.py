"""maxsim's content detector against PySceneDetect's ContentDetector: the same scores, the same cuts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scenedetect.common import FrameTimecode, Timecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import ContentDetector
from scenedetect.stats_manager import StatsManager

from maxsim.media.avframes import iter_decoded
from maxsim.media.content import ContentScoreDetector
from maxsim.media.segment import SceneSegmenter
from maxsim.testing.synthetic import write_video

FPS = 10.0


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[tuple[float, np.ndarray]]:
    """Detection copies of a 9 s video: hard cuts, a weak change, a dark flash, a box moving in."""
    scenes = [(1.5, "red"), (0.3, (20, 20, 20)), (1.2, "red"),
              (2.0, "blue", ("yellow", (0.1, 0.1, 0.5, 0.6))), (1.0, (100, 110, 100)), (1.0, (112, 110, 100)),
              (2.0, "green", ("white", (0.5, 0.2, 0.9, 0.9)))]
    folder = tmp_path_factory.mktemp("content")
    path = write_video(folder / "cuts.mp4", scenes, fps=FPS, size=(160, 96), noise=12)
    return [(t, f.bgr_scaled(128, 77)) for t, f in iter_decoded(path)]


def _timecode(t: float) -> FrameTimecode:
    pts = Timecode(pts=round(t * 1_000_000), time_base=Fraction(1, 1_000_000))
    return FrameTimecode(pts, fps=Fraction(10))


SETTINGS = [
    {},
    {"threshold": 8.0},
    {"threshold": 8.0, "min_scene_len": 4},  # in frames
    {"threshold": 8.0, "filter_mode": FlashFilter.Mode.SUPPRESS},
    {"threshold": 30.0, "weights": ContentDetector.Components(1.0, 0.5, 1.0, 1.0)},  # with the edge map
    {"threshold": 6.0, "weights": ContentDetector.Components(0.0, 0.0, 0.0, 1.0), "kernel_size": 3},
    {"threshold": 5.0, "luma_only": True},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
def test_same_scores_and_cuts_as_pyscenedetect(frames, settings):
    kw = {"min_scene_len": 0.6, **settings}
    ref, stats = ContentDetector(**kw), StatsManager()
    ref.stats_manager = stats
    ours, scores = ContentScoreDetector(**kw), []
    ours.on_score = lambda t, s: scores.append((t, s))
    assert ours.event_buffer_length == ref.event_buffer_length
    ref_cuts, our_cuts = [], []
    for t, img in frames:
        tc = _timecode(t)
        ref_cuts += [c.seconds for c in ref.process_frame(tc, img)]
        our_cuts += [c.seconds for c in ours.process_frame(tc, img)]
    last = _timecode(frames[-1][0])
    ref_cuts += [c.seconds for c in ref.post_process(last)]
    our_cuts += [c.seconds for c in ours.post_process(last)]
    assert our_cuts == ref_cuts
    assert [t for t, _ in scores] == [t for t, _ in frames[1:]]
    expected = [stats.get_metrics(_timecode(t), [ContentDetector.FRAME_SCORE_KEY])[0] for t, _ in frames[1:]]
    np.testing.assert_allclose([s for _, s in scores], expected, rtol=1e-12, atol=1e-12)
    if not settings:  # the defaults find the hard cuts (and merge the 0.3 s dark flash away)
        assert len(our_cuts) >= 3 and max(s for _, s in scores) > 27.0


def test_reports_to_a_stats_manager_as_pyscenedetect_does(frames):
    ref, ours = ContentDetector(threshold=8.0), ContentScoreDetector(threshold=8.0)
    ref.stats_manager, ours.stats_manager = StatsManager(), StatsManager()
    for t, img in frames[:20]:
        ref.process_frame(_timecode(t), img)
        ours.process_frame(_timecode(t), img)
    keys = ContentDetector.METRIC_KEYS
    assert ours.get_metrics() == keys
    for t, _ in frames[1:20]:
        got = ours.stats_manager.get_metrics(_timecode(t), keys)
        want = ref.stats_manager.get_metrics(_timecode(t), keys)
        # without edge weight ContentDetector still computes the edge map with a stats manager attached
        np.testing.assert_allclose(got[:4], want[:4], rtol=1e-12)
        assert got[4] == 0.0


def test_segmenter_default_splits_long_scenes_as_with_pyscenedetect(tmp_path):
    """The default scenes segmenter (maxsim's detector, scores handed over directly) and the same
    settings on PySceneDetect's own detector (scores read through a stats manager) give the same
    segments, long scenes split at the same weak change."""
    path = write_video(tmp_path / "weak.mp4", [(2.6, (100, 110, 100)), (4.4, (110, 110, 100)), (3.0, "blue")])
    ours = SceneSegmenter("content", min_seconds=1.0, max_seconds=4.0)
    pyscenedetect = ContentDetector(threshold=27.0, min_scene_len=0.6)
    theirs = SceneSegmenter(pyscenedetect, min_seconds=1.0, max_seconds=4.0)
    a, b = ours.segment(path), theirs.segment(path)
    assert a == b
    assert [round(s.start, 1) for s in a] == [0.0, 2.6, 4.8, 7.0]  # 2.6-7.0 is over 4 s: split evenly


def test_frame_size_change_restarts_the_comparison():
    det = ContentScoreDetector(threshold=10.0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (32, 48, 3), np.uint8), rng.integers(0, 256, (40, 64, 3), np.uint8)
    assert det.frame_score(a) is None
    assert det.frame_score(a) == 0.0
    assert det.frame_score(b) is None  # another size: no score against the old frame, no error
    assert det.frame_score(b) == 0.0


@pytest.mark.parametrize("kw,match", [({"kernel_size": 4}, "odd integer"),
                                      ({"kernel_size": 1}, "odd integer"),
                                      ({"weights": (0.0, 0.0, 0.0, 0.0)}, "all zero")])
def test_bad_settings_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        ContentScoreDetector(**kw)
    with pytest.raises(ValueError, match=match):
        SceneSegmenter("content", **kw)


@pytest.mark.parametrize("mode", [FlashFilter.Mode.MERGE, FlashFilter.Mode.SUPPRESS])
@pytest.mark.parametrize("length", [0.6, 0.5, 4, 0, "0.7s"])
def test_min_length_filter_releases_what_flash_filter_releases(mode, length):
    """Random above/below runs at 10 fps (times with float error, exact 0.5 s gaps): the same cuts."""
    from maxsim.media.content import MinLengthFilter

    rng = np.random.default_rng(7)
    for trial in range(30):
        ref, ours = FlashFilter(mode=mode, length=length), MinLengthFilter(mode, length)
        assert ours.max_behind == ref.max_behind
        p = rng.uniform(0.05, 0.6)
        want, got = [], []
        for i in range(120):
            t = i * 0.1  # 0.30000000000000004 and the like
            above = bool(rng.random() < p)
            want += [c.seconds for c in ref.filter(timecode=_timecode(t), above_threshold=above)]
            got += ours.filter(round(t * 1_000_000), i + 1, t, above)
        assert np.allclose(got, want, atol=1e-9) and len(got) == len(want), (trial, got, want)


def test_seconds_and_timecodes_give_the_same_cuts(frames):
    a, b = ContentScoreDetector(min_scene_len=0.6), ContentScoreDetector(min_scene_len=0.6)
    by_tc, by_s = [], []
    for t, img in frames:
        by_tc += [c.seconds for c in a.process_frame(_timecode(t), img)]
        by_s += b.process_seconds(t, img)
    assert by_s == pytest.approx(by_tc, abs=1e-9) and len(by_s) >= 3
