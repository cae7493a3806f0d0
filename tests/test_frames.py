"""Frame sampling and clip assembly from the single decode pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maxsim.encoders.color import ColorHistogramEncoder
from maxsim.frames import FrameSampler, iter_clips, jpeg_thumbnail, scale_frame
from maxsim.segment import FixedSegmenter, SceneSegmenter
from maxsim.synthetic import COLORS
from maxsim.types import Clip, FrameSize, Segment
from maxsim.video import VideoError, iter_frames


def _fed(path, **kw) -> FrameSampler:
    s = FrameSampler(**kw)
    for t, f in iter_frames(path):
        s.feed(t, f)
    return s


def _jpeg(data: bytes) -> np.ndarray:
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _colour(frames: np.ndarray) -> np.ndarray:
    return np.median(frames.reshape(-1, 3), axis=0)


def test_sampler_rate_size_and_rgb(scenes_video):
    s = _fed(scenes_video.path, fps=2.0)
    assert s.name == "frames(fps=2, max_frames=16, max_side=448)"
    np.testing.assert_allclose(s.timestamps, np.arange(20) / 2.0, atol=1e-6)
    clip, _ = s.clip(scenes_video.path, Segment(0.0, 2.0))
    assert clip.frames.shape == (4, 64, 96, 3) and clip.frames.dtype == np.uint8  # never upscaled
    assert np.abs(_colour(clip.frames) - COLORS["red"]).max() < 12  # RGB, not BGR
    small = _fed(scenes_video.path, fps=2.0, max_side=48)
    assert small.clip(scenes_video.path, Segment(0.0, 10.0), last=True)[0].frames.shape[1:] == (32, 48, 3)
    assert _fed(scenes_video.path, fps=100.0).n_frames == 100  # above the video's rate: every frame


def test_clips_fixed_rate_and_timestamps(scenes_video):
    clips = list(iter_clips(scenes_video.path, FixedSegmenter(3.0), FrameSampler(fps=2.0)))
    assert [(c.start, c.end) for c, _ in clips] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 10.0)]
    assert [len(c.timestamps) for c, _ in clips] == [6, 6, 6, 2]
    for c, thumb in clips:
        assert isinstance(c, Clip) and c.video == str(scenes_video.path)
        assert c.frames.shape[0] == c.timestamps.shape[0] and c.timestamps.dtype == np.float64
        assert np.all((c.timestamps >= c.start) & (c.timestamps < c.end))
        assert np.all(np.diff(c.timestamps) > 0)
        assert _jpeg(thumb).shape == (64, 96, 3)


def test_clips_capped_by_even_subsampling(scenes_video):
    clips = list(iter_clips(scenes_video.path, FixedSegmenter(3.0), FrameSampler(fps=10.0, max_frames=4)))
    assert [len(c.timestamps) for c, _ in clips] == [4, 4, 4, 4]
    np.testing.assert_allclose(clips[0][0].timestamps, [0.0, 1.0, 1.9, 2.9], atol=1e-6)
    np.testing.assert_allclose(clips[3][0].timestamps, [9.0, 9.3, 9.6, 9.9], atol=1e-6)


def test_short_segment_gets_nearest_frame(scenes_video):
    s = _fed(scenes_video.path, fps=1.0)
    segs = [Segment(0.0, 2.2), Segment(2.2, 2.4), Segment(2.4, 10.0)]
    clips = s.clips(scenes_video.path, segs)
    assert [len(c.timestamps) for c, _ in clips] == [3, 1, 7]
    assert clips[1][0].timestamps.tolist() == [2.0]  # nothing sampled inside: the nearest kept frame


def test_scene_clips_show_their_scene(scenes_video):
    """Default scene segmentation: one clip per colour scene, every frame of it that colour."""
    clips = list(iter_clips(scenes_video.path, SceneSegmenter(min_seconds=0.5), FrameSampler()))
    assert len(clips) == len(scenes_video.scenes)
    bounds = [0.0, *scenes_video.cuts, scenes_video.duration]
    for (clip, thumb), (_, name), a, b in zip(
        clips, scenes_video.scenes, bounds[:-1], bounds[1:], strict=True
    ):
        assert abs(clip.start - a) <= 0.2 and abs(clip.end - b) <= 0.2
        assert len(clip.timestamps) == min(16, len(np.arange(np.ceil(clip.start * 2), np.ceil(clip.end * 2))))
        for frame in clip.frames:
            assert np.abs(_colour(frame) - COLORS[name]).max() < 15, (name, clip.timestamps)
        thumb_rgb = cv2.cvtColor(_jpeg(thumb), cv2.COLOR_BGR2RGB)
        assert np.abs(_colour(thumb_rgb) - COLORS[name]).max() < 15


def test_large_frames_and_thumbnail_size(make_video):
    path = make_video("wide.mp4", [(1.0, "orange"), (1.0, "blue")], fps=10, size=(640, 360))
    sampler = FrameSampler(fps=2.0, max_side=448)
    clips = list(iter_clips(path, "fixed:1", sampler))
    assert sampler.n_frames == 0 and bool(sampler)  # the given sampler only supplies settings
    assert [c.frames.shape for c, _ in clips] == [(2, 252, 448, 3)] * 2
    assert _jpeg(clips[0][1]).shape == (180, 320, 3)
    assert jpeg_thumbnail(np.zeros((10, 20, 3), np.uint8), side=8)[:2] == b"\xff\xd8"


def test_iter_clips_bad_inputs(tmp_path, scenes_video):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(VideoError, match="empty"):
        next(iter_clips(empty))
    cut = tmp_path / "cut.mp4"
    data = scenes_video.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated") as ei:
        list(iter_clips(cut, "fixed"))
    assert ei.value.path == str(cut)


def test_sampler_rejects_bad_settings():
    for kw in ({"fps": 0}, {"max_frames": 0}, {"max_side": 4}):
        with pytest.raises(ValueError):
            FrameSampler(**kw)
    with pytest.raises(ValueError, match="no frame"):
        FrameSampler().clip("x.mp4", Segment(0.0, 1.0))


def test_variable_frame_rate_sampling(vfr_video):
    clips = list(iter_clips(vfr_video.path, "fixed:2", FrameSampler(fps=2.0)))
    assert [(c.start, c.end) for c, _ in clips] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.5)]
    # one kept frame per 0.5 s slot: the first frame at or after each slot start
    np.testing.assert_allclose(clips[0][0].timestamps, [0.0, 0.5, 1.0, 1.5], atol=1e-3)
    np.testing.assert_allclose(clips[1][0].timestamps, [2.0, 2.6, 3.2, 3.5], atol=1e-3)
    np.testing.assert_allclose(clips[2][0].timestamps, [4.1, 4.7, 5.0], atol=1e-3)


def test_single_frame_video(make_video):
    path = make_video("one_frame.mp4", [(0.1, "magenta")])
    for seg in ("fixed", "scenes"):
        ((clip, thumb),) = list(iter_clips(path, seg))
        assert (clip.start, clip.end) == (0.0, 0.1) and clip.timestamps.tolist() == [0.0]
        assert np.abs(_colour(clip.frames) - COLORS["magenta"]).max() < 15
        _jpeg(thumb)


class _PeakSampler(FrameSampler):
    """Records the most frames it ever held (one instance per video via fresh())."""

    peaks: list[int] = []

    def feed(self, t, frame_bgr):
        super().feed(t, frame_bgr)
        if not self.peaks or self.n_frames > self.peaks[-1]:
            self.peaks.append(self.n_frames)


def _unstreamed(path, segmenter, sampler):
    s, run = sampler.fresh(), segmenter.start()
    frames = iter_frames(path)
    for t, f in frames:
        run.feed(t, f)
        s.feed(t, f)
    return s.clips(path, run.finish(frames.duration))


# fixed 1 s spans: at most the open span's 2 frames plus the one kept before it (+1 being fed); scenes:
# the frames since the last final cut, i.e. the 3 s green scene plus the detector's lag (not all 20)
@pytest.mark.parametrize("segmenter, peak", [(FixedSegmenter(1.0), 4), (SceneSegmenter(min_seconds=0.5), 11)])
def test_streaming_clips_equal_unstreamed_and_free_frames(scenes_video, segmenter, peak):
    _PeakSampler.peaks = []
    streamed = list(iter_clips(scenes_video.path, segmenter, _PeakSampler(fps=2.0)))
    reference = _unstreamed(scenes_video.path, segmenter, FrameSampler(fps=2.0))
    assert len(streamed) == len(reference)
    for (a, ta), (b, tb) in zip(streamed, reference, strict=True):
        assert (a.start, a.end, a.video) == (b.start, b.end, b.video) and ta == tb
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.frames, b.frames)
    assert max(_PeakSampler.peaks) <= peak  # the whole video has 20 sampled frames


def test_abandoned_iteration_stops_the_decoder(scenes_video):
    import gc
    import threading

    def decoders() -> int:
        return sum(t.name.startswith("decode ") for t in threading.enumerate())

    before = decoders()
    gen = iter_clips(scenes_video.path, FixedSegmenter(1.0), FrameSampler(), prefetch=2)
    clip, _ = next(gen)  # streamed: the decode thread is still running
    assert (clip.start, clip.end) == (0.0, 1.0)
    gen.close()
    gc.collect()
    for t in threading.enumerate():
        if t.name.startswith("decode "):
            t.join(timeout=5)
    assert decoders() == before


# -- frames sized to the encoder -------------------------------------------------------------------------
class _Sized:
    """An encoder stub that wants frames of at most 768 pixels (and says how many frames it was asked)."""

    name, dim = "sized", 4

    def __init__(self, size=None):
        self.size = FrameSize(max_pixels=768) if size is None else size
        self.asked: list[int] = []

    def frame_size(self, n_frames):
        self.asked.append(n_frames)
        return self.size


def test_sampler_follows_the_encoder_frame_size(scenes_video):
    enc = _Sized()
    s = FrameSampler(fps=2.0, max_frames=6).for_encoder(enc)
    assert enc.asked == [6] and s.frame_size == FrameSize(max_pixels=768)
    assert s.name == "frames(fps=2, max_frames=6, size=max_pixels=768)"
    for t, f in iter_frames(scenes_video.path):
        s.feed(t, f)
    clip, thumb = s.clip(scenes_video.path, Segment(0.0, 2.0))
    h, w = clip.frames.shape[1:3]
    assert (h, w) == (22, 33) and h * w <= 768  # 96x64 scaled by sqrt(768 / 6144), aspect kept
    assert _jpeg(thumb).shape[:2] == (22, 33)
    assert s.fresh().frame_size == s.frame_size  # iter_clips' fresh copy keeps it
    # the user's max_side wins over the encoder; no preference keeps the 448 default
    assert FrameSampler(max_side=48).for_encoder(enc).frame_size is None
    plain = FrameSampler().for_encoder(object())
    assert plain.frame_size is None and plain.name == "frames(fps=2, max_frames=16, max_side=448)"
    short = FrameSampler().for_encoder(_Sized(FrameSize(short_side=32)))
    assert short.name.endswith("size=short_side=32)")
    frame = np.zeros((1080, 1920, 3), np.uint8)
    assert scale_frame(frame, None, FrameSize(short_side=224)).shape == (224, 398, 3)
    assert scale_frame(frame, 448, FrameSize(short_side=224)).shape == (252, 448, 3)  # max_side wins
    small = frame[:100, :100]
    assert scale_frame(small, None, FrameSize(short_side=224)).shape == (100, 100, 3)  # never upscaled


def test_bad_frame_sizes_are_refused():
    class Wrong:
        name = "wrong"

        def frame_size(self, n):
            return 448

    with pytest.raises(TypeError, match="'wrong': frame_size\\(\\) returned int"):
        FrameSampler().for_encoder(Wrong())
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        FrameSize(max_pixels=0)
    with pytest.raises(TypeError, match="frame_size must be a FrameSize"):
        FrameSampler(frame_size=448)


def test_pooled_encoder_forwards_the_frame_size():
    from maxsim.pooling import PooledEncoder

    assert PooledEncoder(_Sized(), factor=2).frame_size(8) == FrameSize(max_pixels=768)
    assert PooledEncoder(ColorHistogramEncoder(), factor=2).frame_size(8) is None


def test_engine_samples_at_the_encoder_size_and_keys_it(tmp_path, scenes_video):
    from maxsim import Engine

    class SizedColour(ColorHistogramEncoder):
        def frame_size(self, n_frames):
            return FrameSize(max_pixels=768)

    eng = Engine(tmp_path / "idx", encoder=SizedColour(), segmenter="fixed:5")
    assert eng.frame_sampler.name == "frames(fps=2, max_frames=16, size=max_pixels=768)"
    assert eng.ingest([scenes_video.path], progress=False).ok
    (entry,) = eng.manifest.videos.values()
    assert "size=max_pixels=768" in entry["settings"]
    eng.sampler = FrameSampler(max_side=48)  # the user's size: a new settings key, so re-encoded
    report = eng.ingest([scenes_video.path], progress=False)
    assert report.ingested and "max_side=48" in next(iter(eng.manifest.videos.values()))["settings"]
