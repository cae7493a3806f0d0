"""Frame sampling and clip assembly from the single decode pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maxsim.encoders import PooledEncoder
from maxsim.encoders.record import encoder_frame_size
from maxsim.errors import VideoError
from maxsim.ingest import sized_sampler
from maxsim.media import FrameSampler, SampleRun, iter_clips, jpeg_thumbnail, scale_frame
from maxsim.media.segment import FixedSegmenter, SceneSegmenter
from maxsim.media.video import iter_frames
from maxsim.testing.color import ColorHistogramEncoder
from maxsim.testing.synthetic import COLORS
from maxsim.types import Clip, FrameSize, Segment


def _fed(path, **kw) -> SampleRun:
    s = FrameSampler(**kw).start()
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
    assert s.recipe.name == "frames(fps=2, max_frames=16, max_side=448)"
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
    clips = list(iter_clips(scenes_video.path, SceneSegmenter("adaptive", min_seconds=0.5), FrameSampler()))
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
    assert sampler == FrameSampler(fps=2.0, max_side=448)  # a recipe: the run holds the frames
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
        FrameSampler().start().clip("x.mp4", Segment(0.0, 1.0))


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


class _PeakRun(SampleRun):
    """Records the most frames it ever held."""

    peaks: list[int] = []

    def feed(self, t, frame_bgr):
        super().feed(t, frame_bgr)
        if not self.peaks or self.n_frames > self.peaks[-1]:
            self.peaks.append(self.n_frames)


class _PeakSampler(FrameSampler):
    """A recipe whose runs record their peak (one run per video)."""

    def start(self) -> _PeakRun:
        return _PeakRun(self)


def _unstreamed(path, segmenter, sampler):
    s, run = sampler.start(), segmenter.start()
    frames = iter_frames(path)
    for t, f in frames:
        run.feed(t, f)
        s.feed(t, f)
    return s.clips(path, run.finish(frames.duration))


# fixed 1 s spans: at most the open span's 2 frames plus the one kept before it (+1 being fed); scenes:
# the frames since the last final cut, i.e. the 3 s green scene plus the detector's lag (not all 20)
@pytest.mark.parametrize("segmenter, peak",
                         [(FixedSegmenter(1.0), 4), (SceneSegmenter("adaptive", min_seconds=0.5), 11)])
def test_streaming_clips_equal_unstreamed_and_free_frames(scenes_video, segmenter, peak):
    _PeakRun.peaks = []
    streamed = list(iter_clips(scenes_video.path, segmenter, _PeakSampler(fps=2.0)))
    reference = _unstreamed(scenes_video.path, segmenter, FrameSampler(fps=2.0))
    assert len(streamed) == len(reference)
    for (a, ta), (b, tb) in zip(streamed, reference, strict=True):
        assert (a.start, a.end, a.video) == (b.start, b.end, b.video) and ta == tb
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.frames, b.frames)
    assert max(_PeakRun.peaks) <= peak  # the whole video has 20 sampled frames


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
    recipe = sized_sampler(FrameSampler(fps=2.0, max_frames=6), enc)
    assert enc.asked == [6] and recipe.frame_size == FrameSize(max_pixels=768)
    assert recipe.name == "frames(fps=2, max_frames=6, size=max_pixels=768)"
    run = recipe.start()
    for t, f in iter_frames(scenes_video.path):
        run.feed(t, f)
    clip, thumb = run.clip(scenes_video.path, Segment(0.0, 2.0))
    h, w = clip.frames.shape[1:3]
    assert (h, w) == (22, 33) and h * w <= 768  # 96x64 scaled by sqrt(768 / 6144), aspect kept
    assert _jpeg(thumb).shape[:2] == (22, 33)
    # the user's max_side wins over the encoder; no preference keeps the 448 default
    assert sized_sampler(FrameSampler(max_side=48), enc).frame_size is None
    plain = sized_sampler(FrameSampler(), ColorHistogramEncoder())
    assert plain.frame_size is None and plain.name == "frames(fps=2, max_frames=16, max_side=448)"
    short = FrameSampler().sized(FrameSize(short_side=32))
    assert short.name.endswith("size=short_side=32)")
    frame = np.zeros((1080, 1920, 3), np.uint8)
    assert scale_frame(frame, None, FrameSize(short_side=224)).shape == (224, 398, 3)
    assert scale_frame(frame, 448, FrameSize(short_side=224)).shape == (252, 448, 3)  # max_side wins
    small = frame[:100, :100]
    assert scale_frame(small, None, FrameSize(short_side=224)).shape == (100, 100, 3)  # never upscaled


def test_recipe_records_and_replaces():
    recipe = FrameSampler(fps=1.0, max_frames=4)
    assert recipe.to_record() == {"fps": 1.0, "max_frames": 4, "max_side": None}
    assert FrameSampler.from_record(recipe.to_record()) == recipe
    sized = recipe.sized(FrameSize(max_pixels=768, short_side=20))
    assert FrameSampler.from_record(sized.to_record()) == sized
    # an index created before recipes were recorded: the default of that time
    legacy = FrameSampler.from_record(None)
    assert (legacy.fps, legacy.max_frames, legacy.max_side) == (2.0, 16, 448)
    assert legacy.sized(FrameSize(max_pixels=768)) is legacy  # max_side wins over the encoder
    assert recipe.replace(max_side=64).name == "frames(fps=1, max_frames=4, max_side=64)"
    with pytest.raises(TypeError, match="unknown setting"):
        recipe.replace(side=64)
    with pytest.raises(ValueError, match="not a frame-sampling recipe"):
        FrameSampler.from_record({"fps": 2.0})


def test_bad_frame_sizes_are_refused():
    class Wrong:
        name = "wrong"

        def frame_size(self, n):
            return 448

    with pytest.raises(TypeError, match="'wrong': frame_size\\(\\) returned int"):
        encoder_frame_size(Wrong(), 16)
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        FrameSize(max_pixels=0)
    with pytest.raises(TypeError, match="frame_size must be a FrameSize"):
        FrameSampler(frame_size=448)


def test_pooled_encoder_forwards_the_frame_size():
    assert PooledEncoder(_Sized(), factor=2).frame_size(8) == FrameSize(max_pixels=768)
    assert PooledEncoder(ColorHistogramEncoder(), factor=2).frame_size(8) is None
