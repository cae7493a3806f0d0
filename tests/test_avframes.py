"""The decode pass of iter_clips (PyAV, converting on demand) against iter_frames (OpenCV, full-size BGR)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maxsim.media.avframes import DecodedFrame, best_effort_stamps, iter_decoded, shrink, yuv_matrix
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
    "fullrange.mp4": ("libx264", "yuv420p", {"color_range": "pc"}),  # a range tag on a plain YUV format
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


def _flat(img: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood has one colour (where a pixel picked a step aside is the same)."""
    lo = cv2.erode(img, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(img, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return (hi.astype(int) - lo.astype(int)).max(axis=-1) <= 2


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("name,table", [("bt709.mp4", BT709_TV), ("untagged.mp4", BT601_TV),
                                        ("fullrange.avi", BT601_PC), ("fullrange.mp4", BT601_PC),
                                        ("yuv444.mp4", BT601_TV)])
def test_scaled_copies_are_exact_conversions_of_the_frame(name, table, tmp_path):
    """The sampler's copy (:func:`shrink`, RGB) is made from the YUV planes with the frame's own matrix
    (BT.709 when tagged, BT.601 otherwise) and range; the detection copy (BGR) from the nearest pixels of
    each plane with the same matrix and range. They match a float conversion of the whole frame with
    the published coefficients followed by the same scaling (to the rounding of the scaled planes, about a
    level; chroma is picked from its own, coarser plane, so colour edges may move by a pixel), and FFmpeg's
    own conversion (whose fast integer path is itself a level or two off), at even and odd sizes."""
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
            bgr = frame.bgr_scaled(*size)  # nearest pixels of each plane, chroma from its own plane
            ref = cv2.resize(exact[:, :, ::-1].copy(), size, interpolation=cv2.INTER_NEAREST_EXACT)
            flat = _flat(ref)
            assert flat.mean() > 0.5, (name, size)
            # the frame's own matrix and range: a wrong one is off by tens of levels on these colours
            assert _mean_diff(bgr[flat], ref[flat]) < 1.5, (name, size)
            assert np.abs(bgr[flat].astype(int) - ref[flat]).max() <= 8, (name, size)
            assert _mean_diff(bgr, ref) < 6.0, (name, size)  # colour edges a picked pixel aside
        assert frame.bgr_scaled(320, 180) is frame.bgr()  # not smaller: the full-size image itself


@pytest.mark.parametrize("fmt", ["gray", "yuv420p", "rgb24"])
def test_detection_copy_takes_the_nearest_pixels(fmt):
    """The detection copy takes the pixel under the centre of each scaled pixel (as
    ``cv2.INTER_NEAREST_EXACT``; at uneven ratios FFmpeg's scaler, which converts formats other than planar
    YUV, may land a column aside), never a blend of neighbours, whatever the frame's pixel format."""
    import av

    h, w = 48, 320
    levels = (np.arange(w) * 37 % 200 + 20).astype(np.uint8)  # neighbouring columns far apart
    grey = np.tile(levels, (h, 1))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    src = av.VideoFrame.from_ndarray(*((grey, "gray") if fmt == "gray" else (rgb, "rgb24")))
    frame = DecodedFrame(src.reformat(format=fmt) if fmt == "yuv420p" else src)
    full = frame.bgr()[h // 2].astype(int)
    for size in ((64, 12), (160, 24), (63, 11), (200, 30)):
        got = frame.bgr_scaled(*size)
        assert got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
        row = got[size[1] // 2].astype(int)
        cols = np.floor((np.arange(size[0]) + 0.5) * w / size[0]).astype(int)
        near = np.stack([np.abs(row - full[np.clip(cols + d, 0, w - 1)]).max(axis=-1) for d in (-1, 0, 1)])
        tol = 0 if fmt != "yuv420p" else 3  # the YUV round trip's rounding
        assert (near.min(axis=0) <= tol).all(), (fmt, size)
        if w % size[0] == 0:  # even ratios: exactly the centre pixel
            assert (near[1] <= tol).all(), (fmt, size)


@pytest.mark.parametrize(("src", "dst"), [((1280, 720), (64, 36)), ((1280, 720), (32, 18)),
                                         ((321, 181), (63, 11)), ((640, 360), (200, 30)), ((37, 5), (36, 5))])
def test_detection_copy_gathers_opencvs_nearest_pixels(src, dst):
    """The detection copy's per-plane gather (byte offsets kept per geometry, rows ``line_size`` apart)
    takes exactly the pixels ``cv2.INTER_NEAREST_EXACT`` takes, on padded rows and odd sizes."""
    import av

    from maxsim.media import avframes

    frame = av.VideoFrame(*src, "yuv420p")
    rng = np.random.default_rng(sum(src) + sum(dst))
    for p in frame.planes:
        p.update(rng.integers(0, 256, p.buffer_size, dtype=np.uint8).tobytes())
    got = avframes._picked_planes(frame.planes, *dst)
    assert got is not None and len(got) == 3
    for p, plane in zip(frame.planes, got, strict=True):
        view = avframes._plane(p)
        same = view.shape[::-1] == dst
        want = view if same else cv2.resize(view, dst, interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(plane, want)
    converted = DecodedFrame(frame).bgr_scaled(*dst)
    assert converted.shape == (dst[1], dst[0], 3)


def test_detection_copy_refuses_planes_shorter_than_they_announce():
    """A plane whose buffer cannot hold the rows it announces, or whose rows are narrower than its width,
    is not gathered from (the caller then goes through FFmpeg's scaler): no read past a buffer's end."""
    from maxsim.media import avframes

    class Plane(bytearray):  # a plane: its geometry as attributes, its bytes through the buffer protocol
        def __init__(self, size: int, width: int, height: int, line_size: int):
            super().__init__(size)
            self.width, self.height, self.line_size = width, height, line_size

    ok = Plane(64 * 48, 64, 48, 64)
    short = Plane(64 * 40, 64, 48, 64)
    narrow = Plane(64 * 48, 64, 48, 32)
    assert avframes._picked_planes((ok, ok, ok), 16, 12) is not None
    assert avframes._picked_planes((ok, short, ok), 16, 12) is None
    assert avframes._picked_planes((ok, ok, narrow), 16, 12) is None


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
    bilinear = cv2.resize(odd, (20, 11), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(shrink(odd, (20, 11)).astype(int) - bilinear).max() <= 1  # cv2.resize's pixel centres
    assert shrink(odd, (63, 35)) is odd


def test_shrink_runs_on_the_calling_thread_in_bands():
    """Every OpenCV call of shrink makes at most SERIAL_PIXELS output pixels (one stripe: OpenCV does not
    wake its worker threads for it), and the bands join seamlessly: the 2x2 means are those of the whole
    image, and the result is within a level of a single warp over the whole image."""
    from maxsim.media import avframes

    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3), np.uint8), (0, 0), 2.0)
    calls: list[tuple[int, int]] = []
    resize, warp = cv2.resize, cv2.warpAffine

    def spy(fn):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls.append(out.shape[:2])
            return out
        return call

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(avframes.cv2, "resize", spy(resize))
        mp.setattr(avframes.cv2, "warpAffine", spy(warp))
        small = shrink(img, (448, 252))
    assert calls and all(h * w <= avframes.SERIAL_PIXELS for h, w in calls)
    assert sum(h for h, w in calls if w == 640) == 360 and sum(h for h, w in calls if w == 448) == 252
    np.testing.assert_array_equal(avframes._halve(img), resize(img, (640, 360), interpolation=cv2.INTER_AREA))
    with pytest.MonkeyPatch.context() as mp:  # one band: the whole warp at once
        mp.setattr(avframes, "SERIAL_PIXELS", 1 << 30)
        whole = shrink(img, (448, 252))
    assert np.abs(small.astype(int) - whole).max() <= 1


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


def test_full_range_tag_on_a_plain_yuv_format():
    """A yuv420p frame tagged full range (as decoders now mark full-range video, instead of yuvj420p) is
    converted with full-range levels by both copies: its colours come back as they went in."""
    import av

    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48], img[:, 48:] = (230, 20, 30), (20, 200, 40)
    yuv = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p", dst_color_range="JPEG")
    assert (yuv.format.name, int(yuv.color_range)) == ("yuv420p", 2)
    frame = DecodedFrame(yuv)
    for copy in (frame.bgr_scaled(48, 32)[:, :, ::-1], frame.rgb_scaled(48, 32)):
        for col, colour in ((8, (230, 20, 30)), (40, (20, 200, 40))):
            assert np.abs(copy[16, col].astype(int) - colour).max() <= 3, (copy[16, col], colour)


def _stamped_frames(stamps):
    import av

    out = []
    for pts, dts in stamps:
        f = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        f.pts, f.dts = pts, dts
        out.append(f)
    return out


def test_best_effort_stamps_time_packed_b_frames_by_decoding_order():
    """An AVI with DivX packed B-frames (OpenCV's megamind.avi) labels frames with their packets' numbers:
    presentation stamps swapped in pairs, decoding stamps counting up. Its frames are timed by the decoding
    stamps from the first frame on (before, times drifted to twice their value: 22.5 s for an 11.3 s
    clip), while ordinary video keeps its presentation stamps (decoding stamps lag them by the reorder
    delay), and a file whose presentation stamps go wrong only later switches then, as FFmpeg does."""
    n = 40
    packed = [(1, 1), (2, 2), (3, 3)] + [(i + 1 if i % 3 == 1 else i - 1 if i % 3 == 2 else i, i)
                                         for i in range(4, n)]
    out = list(best_effort_stamps(iter(_stamped_frames(packed))))
    assert [s for s, _ in out] == [d for _, d in packed]  # monotonic from the first frame
    assert [f.pts for _, f in out] == [p for p, _ in packed]  # frames untouched, in order

    ordinary = [(i, i - 2 if i >= 2 else None) for i in range(n)]  # B-frame reorder delay of 2
    assert [s for s, _ in best_effort_stamps(iter(_stamped_frames(ordinary)))] == list(range(n))

    late = [(i, i) for i in range(30)] + [(31, 30), (30, 31)] + [(i, i) for i in range(32, n)]
    got = [s for s, _ in best_effort_stamps(iter(_stamped_frames(late)), lookahead=16)]
    # presentation stamps until their first backward step, decoding stamps from there
    assert got == list(range(30)) + [31] + list(range(31, n))

    only_dts = [(None, i) for i in range(5)]
    assert [s for s, _ in best_effort_stamps(iter(_stamped_frames(only_dts)))] == list(range(5))
    assert list(best_effort_stamps(iter([]))) == []


def test_decoded_times_match_opencv_on_packed_b_frames(tmp_path, monkeypatch):
    """The whole reader on such a stream: frames relabelled as a packed-B-frame AVI labels them keep the
    times the decoding order gives, as OpenCV reports them."""
    import maxsim.media.avframes as avframes

    path = _colour_video(tmp_path / "v.mp4", "libx264", "yuv420p", None, n=12)
    real = avframes.best_effort_stamps

    def relabel(frames, lookahead=avframes.STAMP_LOOKAHEAD):
        fs = list(frames)
        for f in fs:  # decoding stamps counting up; presentation stamps swapped in pairs after three
            f.dts = f.pts
        for i in range(4, len(fs) - 1, 3):
            fs[i].pts, fs[i + 1].pts = fs[i + 1].pts, fs[i].pts
        return real(iter(fs), lookahead)

    with iter_decoded(path) as frames:
        want = [t for t, _ in frames]
    monkeypatch.setattr(avframes, "best_effort_stamps", relabel)
    with iter_decoded(path) as frames:
        got = [t for t, _ in frames]
    assert got == want and all(b > a for a, b in zip(got, got[1:], strict=False))
    with iter_frames(path) as frames:
        assert [t for t, _ in frames] == want


def test_decoded_hands_frames_over_between_reading_a_packet_and_decoding_it(scenes_video):
    """A list of frames goes out once the next packet is read and before it is decoded, so the consumer works
    while the decode thread waits in the decoder (see maxsim.media.prefetch); the lists hold every frame."""
    from maxsim.media.avframes import AvReader
    from maxsim.media.video import VideoFile

    events: list[str] = []

    class Packet:
        def __init__(self, packet):
            self.packet = packet

        def decode(self):
            frames = self.packet.decode()
            events.append("decode")
            return frames

    class Container:
        def __init__(self, container):
            self.container = container

        def demux(self, stream):
            for packet in self.container.demux(stream):
                events.append("read")
                yield Packet(packet)

    def lists(batch: int) -> list[list[int]]:
        reader = AvReader(VideoFile(scenes_video.path))
        real, reader.container = reader.container, Container(reader.container)
        out = []
        try:
            for frames in reader.decoded(batch):
                events.append("hand over")
                out.append([f.pts for f in frames])
        finally:
            reader.container = real
            reader.release()
        return out

    one = lists(1)
    events.clear()
    three = lists(3)
    assert [p for x in three for p in x] == [p for x in one for p in x] and len(one) > 6
    assert all(len(x) >= 3 for x in three[:-1]) and three[-1]
    assert events.count("hand over") == len(three) and events[-1] == "hand over"
    for i, event in enumerate(events[:-1]):  # the last comes after the last packet
        if event == "hand over":
            assert events[i - 1] == "read" and events[i + 1] == "decode"
