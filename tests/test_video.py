"""Decoding, metadata, hashing and the errors raised for unusable videos."""

from __future__ import annotations

import hashlib
import pickle

import cv2
import numpy as np
import pytest

from maxsim.errors import VideoError
from maxsim.media.video import VideoInfo, content_hash, iter_frames, probe
from maxsim.testing.synthetic import COLORS
from tests.mp4 import faststart


def _write_avi(path, n: int = 40, fps: float = 10.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (96, 64))
    assert w.isOpened()
    rng = np.random.default_rng(1)
    for _ in range(n):
        w.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    w.release()
    return path


def _raises(path, *words):
    with pytest.raises(VideoError) as ei:
        for _ in iter_frames(path):
            pass
    err = ei.value
    assert err.path == str(path) and str(path) in str(err)
    for w in words:
        assert w in err.reason, err.reason
    return err


def test_iter_frames_times_and_pixels(scenes_video):
    decoded = iter_frames(scenes_video.path)
    assert decoded.duration == 0.0 and decoded.fps == 10.0 and decoded.announced_frames == 100
    frames = list(decoded)
    assert len(frames) == 100 and decoded.n_frames == 100
    assert decoded.duration == 10.0  # end of the last frame: its time plus its interval
    times = np.array([t for t, _ in frames])
    np.testing.assert_allclose(times, np.arange(100) / 10.0, atol=1e-6)
    assert np.all(np.diff(times) > 0)
    t0, f0 = frames[0]
    assert f0.shape == (64, 96, 3) and f0.dtype == np.uint8
    red_bgr = np.array(COLORS["red"][::-1])
    assert np.abs(np.median(f0.reshape(-1, 3), axis=0) - red_bgr).max() < 12
    blue_bgr = np.array(COLORS["blue"][::-1])  # first frame of the second scene (cut at 2.0 s)
    assert np.abs(np.median(frames[20][1].reshape(-1, 3), axis=0) - blue_bgr).max() < 12


def test_probe(scenes_video):
    info = probe(scenes_video.path)
    assert info == VideoInfo(str(scenes_video.path), 10.0, 10.0, 100, 96, 64)


def test_content_hash(scenes_video, make_video, tmp_path):
    data = scenes_video.path.read_bytes()
    h = content_hash(scenes_video.path)
    assert h == hashlib.blake2b(data, digest_size=32).hexdigest() and len(h) == 64
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(data)
    assert content_hash(copy) == h
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert content_hash(copy) != h
    with pytest.raises(VideoError, match="no such file"):
        content_hash(tmp_path / "missing.mp4")


def test_video_error_format_and_pickle():
    e = VideoError("/x/y.mp4", "empty file")
    assert (e.path, e.reason, str(e)) == ("/x/y.mp4", "empty file", "/x/y.mp4: empty file")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.reason, str(e2)) == (e.path, e.reason, str(e))


def test_missing_empty_directory(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        iter_frames(tmp_path / "missing.mp4")  # raised eagerly, before iterating
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    _raises(empty, "empty file")
    with pytest.raises(VideoError, match="empty"):
        probe(empty)
    _raises(tmp_path, "not a regular file")


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4", "notes.bin", "notes.mkv"])
def test_text_file_is_not_a_video(tmp_path, name):
    p = tmp_path / name
    p.write_text("just some text, not a video\n" * 200)
    err = _raises(p)
    assert "not" in err.reason
    with pytest.raises(VideoError):
        probe(p)


def test_truncated_mp4_tail_cut_with_index_in_front(scenes_video, tmp_path):
    data = faststart(scenes_video.path.read_bytes())
    whole = tmp_path / "faststart.mp4"
    whole.write_bytes(data)
    assert len(list(iter_frames(whole))) == 100  # the rewritten file itself is fine
    for frac in (0.97, 0.6, 0.3):
        p = tmp_path / f"cut_{frac}.mp4"
        p.write_bytes(data[: int(len(data) * frac)])
        _raises(p, "truncated", "mdat")
        with pytest.raises(VideoError, match="truncated"):
            probe(p)


def test_truncated_mp4_tail_cut_index_at_end(scenes_video, tmp_path):
    data = scenes_video.path.read_bytes()  # OpenCV writes 'moov' after 'mdat'
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: int(len(data) * 0.8)])
    _raises(p, "truncated")


def test_truncated_mp4_head_cut(scenes_video, tmp_path):
    data = scenes_video.path.read_bytes()
    for frac in (0.1, 0.4):  # FFmpeg would happily decode the raw stream left behind, at a wrong rate
        p = tmp_path / f"head_{frac}.mp4"
        p.write_bytes(data[int(len(data) * frac) :])
        _raises(p, "cut at the start")


def test_truncated_avi_detected_by_decoding(tmp_path):
    """No box structure to check: the short decode against the announced frame count gives it away."""
    whole = _write_avi(tmp_path / "whole.avi")
    assert len(list(iter_frames(whole))) == 40
    data = whole.read_bytes()
    p = tmp_path / "cut.avi"
    p.write_bytes(data[: int(len(data) * 0.7)])
    seen = []
    with pytest.raises(VideoError, match="truncated") as ei:
        for t, _ in iter_frames(p):
            seen.append(t)
    assert 0 < len(seen) < 40 and "of the 40 frames" in ei.value.reason
    p.write_bytes(data[8:])  # RIFF header gone
    _raises(p, "not a valid AVI file")


def test_variable_frame_rate_times_come_from_the_container(vfr_video):
    decoded = iter_frames(vfr_video.path)
    times = np.array([t for t, _ in decoded])
    np.testing.assert_allclose(times, vfr_video.times, atol=1e-3)
    assert decoded.duration == pytest.approx(vfr_video.duration, abs=1e-3)
    assert probe(vfr_video.path).n_frames == 40


def test_prefetch_matches_and_propagates_errors(scenes_video, tmp_path):
    plain = [(t, f.sum()) for t, f in iter_frames(scenes_video.path)]
    threaded = iter_frames(scenes_video.path, prefetch=4)
    assert [(t, f.sum()) for t, f in threaded] == plain and threaded.duration == 10.0
    assert next(threaded, None) is None  # stays exhausted
    early = iter_frames(scenes_video.path, prefetch=2)
    next(early)
    early.close()  # stops the decode thread mid-video
    assert early._thread is not None and not early._thread.is_alive() and next(early, None) is None
    data = _write_avi(tmp_path / "whole.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(VideoError, match="truncated"):
        for _ in iter_frames(cut, prefetch=3):
            pass
