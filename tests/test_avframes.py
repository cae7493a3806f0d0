"""The decode pass of iter_clips (PyAV, converting on demand) against iter_frames (OpenCV, full-size BGR)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maxsim.media.avframes import DecodedFrame, iter_decoded, shrink, yuv_matrix
from maxsim.media.frames import FrameSampler
from maxsim.media.video import iter_frames
from maxsim.types import Segment


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


def _colour_video(path, codec: str, pix_fmt: str, options: dict[str, str] | None = None, n: int = 4):
    """Saturated colour blocks (where YUV matrices differ most) around a noise patch, encoded by PyAV."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10, options=options or {})
        s.width, s.height, s.pix_fmt = 320, 180, pix_fmt
        for i in range(n):
            img = np.zeros((180, 320, 3), np.uint8)
            img[:, :110], img[:, 110:220], img[:, 220:] = (230, 20, 30), (20, 200, 40), (30, 40, 220)
            img[60:120, 80 + 10 * i:240] = rng.integers(0, 256, (60, 160 - 10 * i, 3))
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


COLOUR_VIDEOS = {  # name -> (codec, pixel format, encoder options): tagged BT.709, untagged, full range
    "bt709.mp4": ("libx264", "yuv420p", {"colorspace": "bt709", "color_range": "tv"}),
    "untagged.mp4": ("libx264", "yuv420p", None),
    "fullrange.avi": ("mjpeg", "yuvj420p", None),
    "yuv444.mp4": ("libx264", "yuv444p", None),
}


# Published YUV -> RGB coefficients (rows R, G, B; columns Y, U, V) and the levels they apply to.
BT601_TV = ([[1.164383, 0.0, 1.596027], [1.164383, -0.391762, -0.812968], [1.164383, 2.017232, 0.0]], 16)
BT709_TV = ([[1.164383, 0.0, 1.792741], [1.164383, -0.213249, -0.532909], [1.164383, 2.112402, 0.0]], 16)
BT601_PC = ([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], 0)


def _exact_rgb(frame, table) -> np.ndarray:
    """A PyAV frame converted at full size in float64 with ``table`` (chroma upsampled bilinearly)."""
    coef, y0 = table
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes]
    h, w = planes[0].shape
    y = planes[0].astype(np.float64) - y0
    u, v = (cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64) - 128.0
            for p in planes[1:])
    rgb = np.stack([c[0] * y + c[1] * u + c[2] * v for c in coef], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("name,table", [("bt709.mp4", BT709_TV), ("untagged.mp4", BT601_TV),
                                        ("fullrange.avi", BT601_PC), ("yuv444.mp4", BT601_TV)])
def test_scaled_copies_are_exact_conversions_of_the_frame(name, table, tmp_path):
    """The detection copy (:func:`pick`, BGR) and the sampler's copy (:func:`shrink`, RGB) are made from the
    YUV planes with the frame's own matrix (BT.709 when tagged, BT.601 otherwise) and range. They match a
    float conversion of the whole frame with the published coefficients followed by the same scaling (to
    the rounding of the scaled planes, about a level; the picked chroma comes from its own grid), and
    FFmpeg's own conversion (whose fast integer path is itself a level or two off), at even and odd sizes."""
    import av

    path = _colour_video(tmp_path / name, *COLOUR_VIDEOS[name])
    with av.open(str(path)) as c:
        raw = list(c.decode(video=0))
    assert len(raw) == 4
    for av_frame in raw:
        frame = DecodedFrame(av_frame)
        exact = _exact_rgb(av_frame, table)
        ffmpeg = cv2.cvtColor(frame.bgr(), cv2.COLOR_BGR2RGB)
        for size in ((64, 36), (63, 35), (200, 113)):
            rgb = frame.rgb_scaled(*size)
            assert rgb.shape == (size[1], size[0], 3)
            assert _mean_diff(rgb, shrink(exact, size)) < 1.5, (name, size)
            # FFmpeg's conversion scaled by pixel area (shrink's last, bilinear step differs a little)
            area = cv2.resize(ffmpeg, size, interpolation=cv2.INTER_AREA)
            assert _mean_diff(rgb, area) < 4.0, (name, size)
            bgr = frame.bgr_scaled(*size)  # pixels picked from each plane: chroma picked from its own grid
            ref = cv2.resize(exact[:, :, ::-1].copy(), size, interpolation=cv2.INTER_NEAREST_EXACT)
            assert _mean_diff(bgr, ref) < 3.0, (name, size)
        assert frame.bgr_scaled(320, 180) is frame.bgr()  # not smaller: the full-size image itself


def test_yuv_matrix_is_the_published_one():
    for cs, full, table in ((1, False, BT709_TV), (2, False, BT601_TV), (5, True, BT601_PC)):
        coef, y0 = table
        m = yuv_matrix(cs, full, bgr=False)
        np.testing.assert_allclose(m[:, :3], coef, atol=2e-4)
        yuv = np.array([[y0 + 100.0, 60.0, 200.0], [y0, 128.0, 128.0]])
        expect = (np.asarray(coef) @ (yuv - [y0, 128.0, 128.0]).T).T
        np.testing.assert_allclose(yuv @ m[:, :3].T + m[:, 3], expect, atol=1e-3)
        np.testing.assert_allclose(yuv_matrix(cs, full, bgr=True), m[::-1], atol=0)
    # BT.709 and BT.601 differ by several levels on saturated colours: using the wrong one would show above
    red = np.array([63.0, 102.0, 240.0, 1.0])
    assert np.abs(yuv_matrix(1, False) @ red - yuv_matrix(2, False) @ red).max() > 10


def test_sampler_keeps_the_same_frames_from_decoded_frames(scenes_video):
    """Fed the decoder's frames (scaled in their planes) or full-size BGR images, a sampler run keeps
    frames at the same times and sizes with the same pixels (to rounding)."""
    recipe = FrameSampler(fps=2.0, max_frames=4, max_side=48)
    a, b = recipe.start(), recipe.start()
    for t, frame in iter_decoded(scenes_video.path):
        a.feed(t, frame)
        b.feed(t, frame.bgr())
    assert list(a.timestamps) == list(b.timestamps) and a.n_frames == b.n_frames > 10
    seg = Segment(0.0, scenes_video.duration)
    ca, _ = a.clip(scenes_video.path, seg, last=True)
    cb, _ = b.clip(scenes_video.path, seg, last=True)
    assert ca.frames.shape == cb.frames.shape == (4, 32, 48, 3)
    assert np.abs(ca.frames.astype(int) - cb.frames.astype(int)).mean() < 2.0


def test_sampler_wants_exactly_what_it_keeps(scenes_video):
    run = FrameSampler(fps=3.0).start()
    for t, frame in iter_frames(scenes_video.path):
        wanted = run.wants(t)
        kept = run.n_frames
        run.feed(t, frame)
        assert (run.n_frames > kept) == wanted


def test_shrink_is_close_to_scaling_by_pixel_area():
    """Halving by 2x2 means then a bilinear step: within about a level of cv2.INTER_AREA on a detailed
    image, and far from the aliasing of plain bilinear scaling by a large factor."""
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), np.uint8), (0, 0), 2.0)
    area = cv2.resize(img, (448, 252), interpolation=cv2.INTER_AREA).astype(int)
    small = shrink(img, (448, 252))
    assert small.shape == (252, 448, 3) and small.dtype == np.uint8
    assert np.abs(small.astype(int) - area).mean() < 1.0
    aliased = cv2.resize(img, (448, 252), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(aliased - area).mean() > 1.5 * np.abs(small.astype(int) - area).mean()
    odd = rng.integers(0, 256, (35, 63), np.uint8)  # odd sides: no halving, bilinear only
    bilinear = cv2.resize(odd, (20, 11), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(shrink(odd, (20, 11)), bilinear)
    assert shrink(odd, (63, 35)) is odd


def test_decoder_deblocking_setting(scenes_video, monkeypatch):
    """MAXSIM_DECODE_SKIP_LOOP_FILTER: 'noref' by default (frames nothing is predicted from skip the
    deblocking filter), 'none' decodes in full; both give the same frames and times here (near-lossless
    video), and a bad value is an error naming the variable and the choices."""
    from maxsim.media.avframes import LOOP_FILTER_ENV, skip_loop_filter

    monkeypatch.delenv(LOOP_FILTER_ENV, raising=False)
    assert skip_loop_filter() == "noref"
    fast = list(iter_decoded(scenes_video.path))
    monkeypatch.setenv(LOOP_FILTER_ENV, "None ")
    assert skip_loop_filter() == "none"
    full = list(iter_decoded(scenes_video.path))
    assert [t for t, _ in fast] == [t for t, _ in full] and len(full) == 100
    for (_, a), (_, b) in zip(fast, full, strict=True):
        assert np.abs(a.bgr().astype(int) - b.bgr().astype(int)).mean() < 1.0
    monkeypatch.setenv(LOOP_FILTER_ENV, "fast")
    with pytest.raises(ValueError, match="SKIP_LOOP_FILTER='fast': expected one of none, noref"):
        iter_decoded(scenes_video.path)
