"""Segmentation: normalisation invariants, fixed spans, detected cuts against known cuts, specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxsim.media.segment import (
    FixedSegmenter,
    SceneSegmenter,
    Segmenter,
    fixed_segments,
    load_segmenter,
    normalize_segments,
)
from maxsim.types import Segment


def _assert_tiles(segs: list[Segment], duration: float) -> None:
    assert segs, "no segment"
    assert segs[0].start == 0.0
    assert segs[-1].end == duration
    for a, b in zip(segs[:-1], segs[1:], strict=True):
        assert a.end == b.start  # the very same float: no gap, no overlap
    assert all(s.end > s.start for s in segs)


def _starts(segs: list[Segment]) -> list[float]:
    return [s.start for s in segs]


# ---------------------------------------------------------------------------------------------- normalise

durations = st.floats(min_value=0.05, max_value=5000.0, allow_nan=False)


@st.composite
def cases(draw):
    duration = draw(durations)
    cuts = draw(
        st.lists(st.floats(min_value=-10.0, max_value=duration * 1.2 + 1, allow_nan=False), max_size=60)
    )
    min_s = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    max_s = draw(st.sampled_from([None, 2 * min_s if min_s else 1.0, 10.0, 30.0]))
    return duration, cuts, min_s, max_s


@settings(max_examples=300, deadline=None)
@given(cases())
def test_normalize_invariants(case):
    duration, cuts, min_s, max_s = case
    segs = normalize_segments(cuts, duration, min_s, max_s)
    _assert_tiles(segs, duration)
    eps = 1e-6
    if max_s is not None:
        assert all(s.duration <= max_s + eps for s in segs)
    if duration >= min_s:
        assert all(s.duration >= min_s - eps for s in segs)
    else:
        assert len(segs) == 1
    # every boundary is an input cut or lies inside a segment that was split evenly
    inner = {c for c in cuts if 0 < c < duration}
    if max_s is None:
        assert set(_starts(segs)[1:]) <= inner
    if min_s == 0 and max_s is None:
        assert len(segs) == 1 + len({c for c in inner if c > 1e-9 and c < duration - 1e-9})


def _reference_merge(bounds: list[float], min_s: float) -> list[float]:
    """The merge rule spelled out naively: shortest first (leftmost on ties), into the shorter neighbour."""
    bounds = list(bounds)
    while len(bounds) > 2:
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_s - 1e-9:
            break
        if i == 0:
            left = 0
        elif i == len(lengths) - 1:
            left = i - 1
        else:
            left = i - 1 if lengths[i - 1] <= lengths[i + 1] else i
        del bounds[left + 1]
    return bounds


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=1, max_size=40),
    st.sampled_from([0.5, 2.0, 10.0]),
)
def test_merge_matches_reference(lengths, min_s):
    bounds = np.concatenate([[0.0], np.cumsum(lengths)]).tolist()
    segs = normalize_segments(bounds[1:-1], bounds[-1], min_seconds=min_s)
    expected = _reference_merge(bounds, min_s) if len(bounds) > 2 else bounds
    assert [s.start for s in segs] + [segs[-1].end] == expected


@settings(max_examples=100, deadline=None)
@given(durations, st.lists(st.floats(min_value=0, max_value=5000), max_size=30))
def test_normalize_accepts_segments(duration, cuts):
    inner = sorted(c for c in cuts if 0 < c < duration)
    bounds = [0.0, *inner, duration]
    segs = [Segment(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    assert normalize_segments(segs, duration) == normalize_segments(inner, duration)


def test_normalize_examples():
    assert normalize_segments([], 7.5) == [Segment(0.0, 7.5)]
    assert normalize_segments([3.0, 3.0, 0.0, 7.5, 12.0, math.nan], 7.5) == [
        Segment(0.0, 3.0),
        Segment(3.0, 7.5),
    ]
    # a 0.3 s scene merges into its shorter neighbour (the 2 s one before it)
    assert _starts(normalize_segments([2.0, 2.3, 10.0], 20.0, min_seconds=1.0)) == [0.0, 2.3, 10.0]
    assert _starts(normalize_segments([5.0, 5.3, 7.0], 20.0, min_seconds=1.0)) == [0.0, 5.0, 7.0]
    # short first / last scenes merge inwards
    assert _starts(normalize_segments([0.2, 5.0, 9.9], 10.0, min_seconds=1.0)) == [0.0, 5.0]
    # a video shorter than min_seconds is one segment
    assert normalize_segments([0.1, 0.2], 0.5, min_seconds=1.0) == [Segment(0.0, 0.5)]
    # 25 s splits into 3 equal parts under max 10 s; 20 s into exactly 2
    segs = normalize_segments([], 25.0, max_seconds=10.0)
    np.testing.assert_allclose([s.duration for s in segs], [25 / 3] * 3)
    assert normalize_segments([], 20.0, max_seconds=10.0) == [Segment(0.0, 10.0), Segment(10.0, 20.0)]


@pytest.mark.parametrize(
    "args",
    [
        (0.0, 0.0, None),
        (-1.0, 0.0, None),
        (math.inf, 0.0, None),
        (10.0, -1.0, None),
        (10.0, 0.0, 0.0),
        (10.0, 3.0, 5.0),
    ],
)
def test_normalize_rejects_bad_values(args):
    duration, min_s, max_s = args
    with pytest.raises(ValueError):
        normalize_segments([1.0], duration, min_s, max_s)


# ---------------------------------------------------------------------------------------------- fixed


def test_fixed_segments_exact():
    assert fixed_segments(25.0, 10.0) == [Segment(0.0, 10.0), Segment(10.0, 20.0), Segment(20.0, 25.0)]
    assert fixed_segments(20.0, 10.0) == [Segment(0.0, 10.0), Segment(10.0, 20.0)]
    assert fixed_segments(3.0, 10.0) == [Segment(0.0, 3.0)]
    segs = fixed_segments(1000.0, 0.1)  # no float drift: boundaries are k * seconds
    assert len(segs) == 10000 and segs[1234].start == 1234 * 0.1
    _assert_tiles(segs, 1000.0)


def test_fixed_segmenter_on_video(scenes_video):
    seg = FixedSegmenter(3.0)
    assert seg.name == "fixed(seconds=3)" and seg.needs_frames is False
    assert seg.segment(scenes_video.path) == [
        Segment(0.0, 3.0),
        Segment(3.0, 6.0),
        Segment(6.0, 9.0),
        Segment(9.0, 10.0),
    ]
    run = seg.start()  # frames are optional for a run that does not need them
    assert run.finish(4.5) == [Segment(0.0, 3.0), Segment(3.0, 4.5)]
    with pytest.raises(ValueError):
        FixedSegmenter(0)


# ---------------------------------------------------------------------------------------------- scenes


def _close(found: list[float], truth: list[float], fps: float, frames: int = 2) -> bool:
    return len(found) == len(truth) and all(
        abs(a - b) <= frames / fps + 1e-6 for a, b in zip(found, truth, strict=True)
    )


@pytest.mark.parametrize("detector", ["adaptive", "histogram"])
def test_scene_cuts_found(scenes_video, detector):
    seg = SceneSegmenter(detector, min_seconds=0.0, max_seconds=None)
    assert isinstance(seg, Segmenter) and seg.needs_frames
    segs = seg.segment(scenes_video.path)
    _assert_tiles(segs, scenes_video.duration)
    assert _close(_starts(segs)[1:], scenes_video.cuts, scenes_video.fps), _starts(segs)


def test_default_scene_segmenter_large_frames_vfr_safe(make_video):
    """Default settings; frames wider than the detection width are downscaled first."""
    scenes = [(1.5, "red"), (2.5, "cyan"), (1.0, "purple"), (3.0, "orange")]
    path = make_video("scenes_640.mp4", scenes, fps=25, size=(640, 360))
    seg = SceneSegmenter()
    assert seg.name.startswith("scenes(content, min_scene_len=0.6, threshold=27")
    segs = seg.segment(path)
    _assert_tiles(segs, 8.0)
    assert _close(_starts(segs)[1:], [1.5, 4.0, 5.0], 25.0)


def test_detection_width_per_detector(make_video, monkeypatch):
    """The content detector looks at a 32-px copy by default (the segment benchmark found the same cuts
    as at 256 px); the others keep SceneManager's 256 px; an explicit width wins."""
    from maxsim.media.content import ContentScoreDetector

    assert SceneSegmenter().detection_width == 32 and "width=32" in SceneSegmenter().name
    assert SceneSegmenter().detection_size(1280, 720) == (32, 18)
    assert SceneSegmenter("adaptive").detection_width == 256
    assert SceneSegmenter("histogram").detection_size(1280, 720) == (256, 144)
    assert SceneSegmenter("content", detection_width=256).detection_width == 256
    assert load_segmenter("scenes:content,detection_width=200").detection_width == 200
    with pytest.raises(ValueError, match="detection_width"):
        SceneSegmenter(detection_width=8)

    seen: list[tuple[int, ...]] = []
    step = ContentScoreDetector.process_seconds
    monkeypatch.setattr(ContentScoreDetector, "process_seconds",
                        lambda self, t, img: seen.append(img.shape) or step(self, t, img))
    scenes = [(1.5, "red"), (2.5, "cyan"), (1.0, "purple"), (3.0, "orange")]
    path = make_video("scenes_640w.mp4", scenes, fps=25, size=(640, 360))
    narrow = SceneSegmenter().segment(path)
    assert set(seen) == {(18, 32, 3)}
    seen.clear()
    wide = SceneSegmenter(detection_width=256).segment(path)
    assert set(seen) == {(144, 256, 3)}
    assert narrow == wide and _close(_starts(narrow)[1:], [1.5, 4.0, 5.0], 25.0)


def test_no_cut_is_one_segment(make_video):
    path = make_video("single.mp4", [(3.0, "green")])
    for seg in (SceneSegmenter(), SceneSegmenter("histogram"), SceneSegmenter("content")):
        assert seg.segment(path) == [Segment(0.0, 3.0)]


def test_scene_min_max_applied(scenes_video):
    # the 1.2 s yellow scene (6.5-7.7) merges into its shorter neighbour under min 1.5 s;
    # the 3 s green scene splits into two under max 2 s... which max 2 s forces for every scene > 2 s
    segs = SceneSegmenter("adaptive", min_seconds=1.5, max_seconds=None).segment(scenes_video.path)
    _assert_tiles(segs, 10.0)
    assert _close(_starts(segs)[1:], [2.0, 3.5, 6.5], 10.0)
    segs = SceneSegmenter("adaptive", min_seconds=0.5, max_seconds=1.0).segment(scenes_video.path)
    _assert_tiles(segs, 10.0)
    assert all(s.duration <= 1.0 + 1e-9 for s in segs) and len(segs) == 2 + 2 + 3 + 2 + 3


def test_scene_segmenter_with_detector_instance(scenes_video):
    from scenedetect.detectors import ContentDetector

    seg = SceneSegmenter(ContentDetector(threshold=18.0, min_scene_len=0.6), min_seconds=0, max_seconds=None)
    assert seg.name.startswith("scenes(ContentDetector")
    a, b = seg.segment(scenes_video.path), seg.segment(scenes_video.path)  # fresh detector state per video
    assert a == b and _close(_starts(a)[1:], scenes_video.cuts, 10.0)


def test_matches_pyscenedetect_pipeline(scenes_video):
    """Our single-pass feeding gives the cuts PySceneDetect's own detect() gives."""
    from scenedetect import AdaptiveDetector, detect

    ref = detect(
        str(scenes_video.path),
        AdaptiveDetector(adaptive_threshold=3.5, window_width=3, min_scene_len=0.6),
        start_in_scene=True,
    )
    ours = SceneSegmenter("adaptive", min_seconds=0, max_seconds=None).segment(scenes_video.path)
    assert [round(s.start, 6) for s in ours] == [round(a.seconds, 6) for a, _ in ref]


def test_scene_segmenter_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown scene detector"):
        SceneSegmenter("nope")
    with pytest.raises(ValueError, match="invalid settings"):
        SceneSegmenter("content", bogus=1)
    with pytest.raises(ValueError, match="twice"):
        SceneSegmenter(min_seconds=5, max_seconds=6)


# ---------------------------------------------------------------------------------------------- specs


def test_load_segmenter_specs():
    assert load_segmenter("fixed").name == "fixed(seconds=10)"
    assert load_segmenter("fixed:5").name == "fixed(seconds=5)"
    assert load_segmenter("fixed:seconds=2.5").name == "fixed(seconds=2.5)"
    assert load_segmenter("scenes").name == SceneSegmenter().name
    s = load_segmenter("scenes:content,threshold=30,max_seconds=15")
    assert s.name == SceneSegmenter("content", threshold=30, max_seconds=15).name and "threshold=30" in s.name
    assert load_segmenter("maxsim.segment:FixedSegmenter").name == "fixed(seconds=10)"
    inst = FixedSegmenter(7)
    assert load_segmenter(inst) is inst
    for bad in (
        "nope",
        "scenes:nope",
        "fixed:0",
        "fixed:x=1",
        "no_such_module_xyz:Thing",
        "maxsim.segment:Nope",
    ):
        with pytest.raises(ValueError):
            load_segmenter(bad)
    with pytest.raises(TypeError):
        load_segmenter(42)  # type: ignore[arg-type]


def test_variable_frame_rate_cuts_in_seconds(vfr_video):
    for seg in (SceneSegmenter("adaptive", min_seconds=0, max_seconds=None),
                SceneSegmenter("histogram", min_seconds=0)):
        segs = seg.segment(vfr_video.path)
        _assert_tiles(segs, 5.5)
        assert _close(_starts(segs)[1:], vfr_video.cuts, 20.0), _starts(segs)  # within 1-2 frames (0.05 s)


# ---------------------------------------------------------------------------------------------- streaming


@st.composite
def cut_streams(draw):
    lengths = draw(st.lists(st.floats(min_value=0.05, max_value=30.0), min_size=1, max_size=40))
    bounds = np.cumsum(lengths).tolist()
    duration = bounds[-1] + draw(st.floats(min_value=0.05, max_value=10.0))
    min_s = draw(st.sampled_from([0.0, 0.6, 1.0, 4.0]))
    max_s = draw(st.sampled_from([None, 8.0, 20.0]))
    lag = draw(st.sampled_from([None, 0.0, 0.5, 3.0]))
    delays = draw(
        st.lists(st.floats(min_value=0.0, max_value=lag or 0.0), min_size=len(bounds), max_size=len(bounds))
    )
    return bounds, duration, min_s, max_s, lag, delays


@settings(max_examples=300, deadline=None)
@given(cut_streams())
def test_streamed_segments_equal_the_whole_normalisation(case):
    """Segments released while cuts arrive (each at most ``lag`` late, in time order) are a growing prefix
    of the final list, and that list equals normalize_segments on all cuts."""
    from maxsim.media.scenes import _CutStream

    cuts, duration, min_s, max_s, lag, delays = case
    stream = _CutStream(min_s, max_s, lag)
    arrival, last = [], 0.0
    for c, d in zip(cuts, delays, strict=True):
        last = max(last, c + d)
        arrival.append(last)
    released: list[Segment] = []
    i = 0
    for t in np.arange(0.0, duration, 0.25):
        while i < len(cuts) and arrival[i] <= t:
            stream.add(cuts[i])
            i += 1
        final = stream.advance(float(t))
        assert final[: len(released)] == released and (not final or final[-1].end <= t + 1e-9)
        released = list(final)
    for c in cuts[i:]:
        stream.add(c)
    result = stream.finish(duration)
    assert result[: len(released)] == released
    assert result == normalize_segments(cuts, duration, min_s, max_s)


def test_fixed_run_releases_decoded_spans():
    run = FixedSegmenter(2.0).start()
    assert run.final_segments(1.9) == []
    assert run.final_segments(4.0) == [Segment(0.0, 2.0), Segment(2.0, 4.0)]
    assert run.finish(5.0)[:2] == run.final_segments(5.0)
