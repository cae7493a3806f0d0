"""The decode pass of iter_clips (PyAV, converting on demand) against iter_frames (OpenCV, full-size BGR)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maxsim.media.avframes import iter_decoded
from maxsim.media.frames import FrameSampler
from maxsim.media.video import iter_frames


@pytest.mark.parametrize("which", ["scenes_video", "vfr_video"])
def test_same_times_and_pixels_as_iter_frames(which, request):
    video = request.getfixturevalue(which)
    ref = iter_frames(video.path)
    ref_frames = list(ref)
    got = iter_decoded(video.path, prefetch=4)
    frames = list(got)
    assert [t for t, _ in frames] == [t for t, _ in ref_frames]
    assert got.duration == ref.duration and got.timeline == ref.timeline
    for (_, a), (_, b) in zip(frames, ref_frames, strict=True):
        assert a.bgr().shape == b.shape
        assert np.abs(a.bgr().astype(int) - b.astype(int)).max() <= 2


def test_scaled_copy_matches_a_resize_of_the_full_frame(make_video):
    scenes = [(0.5, "red"), (0.5, "blue"), (0.5, "green"), (0.5, "white")]
    path = make_video("scaled_320x180.mp4", scenes, size=(320, 180))
    for _, frame in iter_decoded(path):
        small = frame.bgr_scaled(64, 36)  # 4:2:0 planes scaled, then converted
        ref = cv2.resize(frame.bgr(), (64, 36), interpolation=cv2.INTER_LINEAR)
        assert small.shape == (36, 64, 3) and small.dtype == np.uint8
        assert np.abs(small.astype(int) - ref.astype(int)).mean() < 6
        odd = frame.bgr_scaled(63, 35)  # sizes 4:2:0 cannot hold: converted at full size first
        np.testing.assert_array_equal(odd, cv2.resize(frame.bgr(), (63, 35), interpolation=cv2.INTER_LINEAR))
        assert frame.bgr_scaled(320, 180) is frame.bgr()


def test_sampler_wants_exactly_what_it_keeps(scenes_video):
    run = FrameSampler(fps=3.0).start()
    for t, frame in iter_frames(scenes_video.path):
        wanted = run.wants(t)
        kept = run.n_frames
        run.feed(t, frame)
        assert (run.n_frames > kept) == wanted
