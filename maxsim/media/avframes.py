"""The decode pass of :func:`~maxsim.media.clips.iter_clips` through PyAV, converting only what is used.

OpenCV's reader converts every decoded frame to a full-size BGR image, which on 720p video costs about as
much as decoding it. The single decode pass needs far less: cut detection looks at a copy 64 or 256 pixels
wide and the sampler keeps a couple of frames a second. Here frames stay in the decoder's own format
(:class:`DecodedFrame`): the detection copy picks the nearest pixels of each plane, reading only the rows it
keeps, and converts that small copy with the frame's own YUV matrix; the sampler's copy is scaled plane by
plane before it is converted; a full-size BGR image is made only for a frame that something asks for.

Times, the completeness check and the background decoding are those of
:func:`~maxsim.media.video.iter_frames` (the same :class:`~maxsim.media.video.FrameReader` clock): a
frame's time is its presentation time from the stream's start, as OpenCV reports it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from maxsim.errors import VideoError
from maxsim.media.containers import TEXT_CODECS, container_problem
from maxsim.media.video import FALLBACK_FPS, DecodedFrames, FrameReader, VideoFile, announced_timeline

logger = logging.getLogger(__name__)

# Decoder threads (FFmpeg frame threading); 0 lets FFmpeg choose from the cores it sees.
THREADS_ENV = "MAXSIM_DECODE_THREADS"
# Which frames skip the decoder's in-loop deblocking filter (FFmpeg's skip_loop_filter, for H.264 and HEVC;
# other decoders ignore it). "noref", the default: frames no other frame predicts from, so nothing drifts
# and only those frames come out a little less smoothed (on Big Buck Bunny's 720p H.264, sampled frames
# scaled to 448 px: 49 dB PSNR at worst, 61 dB median, against the full decode), for about a tenth less
# decoding work. "none": the full decode. Also "bidir", "nokey", "all" (faster, but the skipped filtering
# of reference frames then carries into the frames predicted from them).
LOOP_FILTER_ENV = "MAXSIM_DECODE_SKIP_LOOP_FILTER"
LOOP_FILTER_CHOICES = ("none", "noref", "bidir", "nokey", "all")
_ATTACHED_PIC = 0x0400
Scaler = Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # (image, (width, height)) -> scaled image
_MAX_BAD_PACKETS = 64  # consecutive packets the decoder rejects before the stream is taken to end there


class DecodedFrame:
    """One decoded frame in the decoder's pixel format; converted on demand (and each result kept)."""

    __slots__ = ("_frame", "_bgr", "_small")

    def __init__(self, frame: av.VideoFrame) -> None:
        self._frame = frame
        self._bgr: np.ndarray | None = None
        self._small: dict[tuple[int, int], np.ndarray] = {}

    @property
    def width(self) -> int:
        return int(self._frame.width)

    @property
    def height(self) -> int:
        return int(self._frame.height)

    def bgr(self) -> np.ndarray:
        """The full-size frame, BGR uint8 ``(H, W, 3)``."""
        if self._bgr is None:
            self._bgr = self._frame.to_ndarray(format="bgr24")
        return self._bgr

    def bgr_scaled(self, width: int, height: int) -> np.ndarray:
        """A ``width`` x ``height`` BGR uint8 copy made of the nearest pixels (see :func:`pick`): the cut
        detector's copy. Planar YUV frames are picked plane by plane where they lie, reading only the rows
        kept, and the small result converted with the frame's own YUV matrix and range; other formats go
        through FFmpeg's scaler (nearest pixels, converted in the same pass).

        The decoder hands frames over no longer in this core's cache, so the rows read are the cost:
        FFmpeg's scaler reads every row even for a point-sampled copy (on 720p, 720 luma and twice 360
        chroma rows, against 18 of each plane here for the content detector's 32-px copy)."""
        return self._scaled(int(width), int(height), True, pick, other=_point_bgr)

    def rgb_scaled(self, width: int, height: int) -> np.ndarray:
        """A ``width`` x ``height`` RGB uint8 copy (see :func:`shrink`): the frame the sampler keeps for
        the encoder."""
        return self._scaled(int(width), int(height), False, shrink)

    def _scaled(self, width: int, height: int, bgr: bool, scale: Scaler,
                other: Callable[[av.VideoFrame, int, int], np.ndarray | None] | None = None) -> np.ndarray:
        """Planar 8-bit YUV frames (nearly all video) are scaled plane by plane where they lie and only the
        small result is converted, with the frame's own YUV matrix and range; other formats go through
        ``other(frame, width, height)`` where given (None where it refuses the frame); what is left, and
        sizes that are not smaller, are converted at full size first."""
        key = (width, height, bgr, scale)
        if key not in self._small:
            small = None
            if width < self.width or height < self.height:
                small = _scaled_yuv(self._frame, width, height, bgr, scale)
                if small is None and other is not None:
                    small = other(self._frame, width, height)
            if small is None:
                full = self.bgr() if bgr else cv2.cvtColor(self.bgr(), cv2.COLOR_BGR2RGB)
                same = (width, height) == (self.width, self.height)
                small = full if same else scale(full, (width, height))
            self._small[key] = small
        return self._small[key]


def shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to ``size`` (width, height): halved by 2x2 pixel means while it is at least twice as
    large in both directions, then bilinearly. Close to scaling by pixel area (``cv2.INTER_AREA``: about
    a level apart on detailed frames), at a fraction of its cost (0.15 ms against 1.4 ms for a 720p
    plane to 448 px), and with no aliasing of the nearest-pixel kind plain bilinear scaling has.

    Each OpenCV call makes at most :data:`SERIAL_PIXELS` output pixels, so that OpenCV runs it on the
    calling thread: in the decode pass every core is already decoding, and handing part of each call to
    OpenCV's worker threads cost more CPU time (waking them and waiting for them) than it saved."""
    w, h = size
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h and not (img.shape[1] % 2 or img.shape[0] % 2):
        img = _halve(img)
    return img if img.shape[1::-1] == (w, h) else _bilinear(img, (w, h))


# Output pixels per OpenCV call in shrink: OpenCV splits a call among its threads in stripes of 2^16
# output pixels (rounded, so from 1.5 x 2^16 on), and runs one of a single stripe on the calling thread.
SERIAL_PIXELS = 1 << 16


def _bands(rows: int, width: int) -> Iterator[tuple[int, int]]:
    """Output row ranges ``[y0, y1)`` of at most :data:`SERIAL_PIXELS` pixels each (one row at least)."""
    step = max(1, SERIAL_PIXELS // max(1, width))
    for y0 in range(0, rows, step):
        yield y0, min(rows, y0 + step)


def _halve(img: np.ndarray) -> np.ndarray:
    """2x2 pixel means of an image with even sides (each band the exact rows of the whole-image result)."""
    h, w = img.shape[0] // 2, img.shape[1] // 2
    out = np.empty((h, w, *img.shape[2:]), img.dtype)
    for y0, y1 in _bands(h, w):
        cv2.resize(img[2 * y0:2 * y1], (w, y1 - y0), dst=out[y0:y1], interpolation=cv2.INTER_AREA)
    return out


def _bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear scaling with ``cv2.resize``'s pixel-centre alignment, as an affine warp done band by band
    (within a level of ``cv2.resize``: the warp interpolates at 1/32 pixel; it is also faster here)."""
    w, h = size
    sx, sy = img.shape[1] / w, img.shape[0] / h
    out = np.empty((h, w, *img.shape[2:]), img.dtype)
    for y0, y1 in _bands(h, w):
        m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, (y0 + 0.5) * sy - 0.5]])
        cv2.warpAffine(img, m, (w, y1 - y0), dst=out[y0:y1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
    return out


_PLANAR_YUV = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p")
# (Kr, Kb) of the YUV matrix a frame's colorspace (FFmpeg's AVColorSpace) names; BT.601 otherwise, as
# FFmpeg's scaler assumes for untagged video.
_KR_KB = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full 0-255 levels


@functools.lru_cache(maxsize=64)
def yuv_matrix(colorspace: int, full_range: bool, bgr: bool = True) -> np.ndarray:
    """The 3x4 affine map (for ``cv2.transform``) from 8-bit (Y, U, V) to (B, G, R), or to (R, G, B);
    read-only (shared between calls)."""
    kr, kb = _KR_KB.get(int(colorspace), _BT601)
    kg = 1.0 - kr - kb
    ys, cs, y0 = (1.0, 1.0, 0.0) if full_range else (255.0 / 219.0, 255.0 / 224.0, 16.0)
    rv, bu = cs * 2.0 * (1.0 - kr), cs * 2.0 * (1.0 - kb)
    gu, gv = -bu * kb / kg, -rv * kr / kg
    rows = {"r": (ys, 0.0, rv), "g": (ys, gu, gv), "b": (ys, bu, 0.0)}
    m = np.array([rows[c] for c in ("bgr" if bgr else "rgb")], dtype=np.float64)
    offset = -(m[:, 0] * y0 + (m[:, 1] + m[:, 2]) * 128.0)
    out = np.concatenate([m, offset[:, None]], axis=1).astype(np.float32)
    out.flags.writeable = False
    return out


def pick(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to ``size`` (width, height) by taking the pixel under the centre of each scaled pixel
    (``cv2.INTER_NEAREST_EXACT``). Cut detection compares whole frames, for which these samples do as well
    as an average (`maxsim-bench segment` measured the same cuts); it reads a fraction of the frame (0.02
    ms for a 720p plane to 256 px against 0.05 ms bilinear and 0.2 ms once the frame has left the cache)."""
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST_EXACT)


def _plane(p: av.video.plane.VideoPlane) -> np.ndarray | None:
    """The plane's pixels as a view (rows ``line_size`` bytes apart); None if its buffer is too short."""
    w, h, line = p.width, p.height, p.line_size
    if line < w or p.buffer_size < line * (h - 1) + w:
        return None
    return np.ndarray((h, w), np.uint8, buffer=p, strides=(line, 1))


@functools.lru_cache(maxsize=64)
def _nearest_index(n_src: int, n_dst: int) -> np.ndarray:
    """The source position :func:`pick` takes for each of ``n_dst`` outputs along an axis ``n_src`` long,
    asked of ``cv2.resize`` itself (on a ramp), so that a gather by these positions is its result exactly."""
    ramp = np.arange(n_src, dtype=np.float32)[None, :]  # exact integers up to 2^24
    return cv2.resize(ramp, (n_dst, 1), interpolation=cv2.INTER_NEAREST_EXACT)[0].astype(np.intp)


@functools.lru_cache(maxsize=64)
def _pick_offsets(w: int, h: int, line: int, width: int, height: int) -> tuple[np.ndarray, int]:
    """Byte offsets into a ``w`` x ``h`` plane with rows ``line`` bytes apart of the pixels :func:`pick`
    takes for a ``width`` x ``height`` copy, and the buffer size they need; read-only (shared)."""
    offsets = _nearest_index(h, height)[:, None] * line + _nearest_index(w, width)[None, :]
    offsets.flags.writeable = False
    return offsets, int(offsets.max()) + 1


def _picked_planes(planes: Sequence[Any], width: int, height: int) -> list[np.ndarray] | None:
    """:func:`pick` of each plane, as one gather per plane by byte offsets kept per geometry: the same
    pixels, with none of the per-plane views and fewer calls (the detection copy is made from every frame
    of every video); None if a plane's buffer is too short for its announced rows, or its rows narrower
    than its width."""
    out = []
    for p in planes:
        w, line = p.width, p.line_size
        if line < w:
            return None
        offsets, need = _pick_offsets(w, p.height, line, width, height)
        buf = np.frombuffer(p, np.uint8)
        if buf.size < need:
            return None
        out.append(buf.take(offsets))
    return out


def _scaled_yuv(frame: av.VideoFrame, width: int, height: int, bgr: bool, scale: Scaler) -> np.ndarray | None:
    """Scale the planes of an 8-bit planar YUV frame to ``width`` x ``height`` and convert the result."""
    fmt = frame.format.name
    if fmt not in _PLANAR_YUV:
        return None
    planes = frame.planes  # a fresh tuple of plane objects on every access
    if len(planes) < 3:
        return None
    size = (width, height)
    if scale is pick:
        scaled = _picked_planes(planes[:3], width, height)
    else:
        views = [_plane(p) for p in planes[:3]]
        scaled = None if any(v is None for v in views) else [
            v if v.shape[::-1] == size else scale(v, size) for v in views]
    if scaled is None:
        return None
    full = fmt.startswith("yuvj") or int(frame.color_range or 0) == _JPEG_RANGE
    return cv2.transform(cv2.merge(scaled), yuv_matrix(int(frame.colorspace or 2), full, bgr))


_LOCAL = threading.local()  # one FFmpeg scaler context per thread (each keeps its setup between frames)
_ONE_THREAD: dict[str, int] | None = {"threads": 1}  # the scaler's own threads; dropped where PyAV lacks it


def _point_bgr(frame: av.VideoFrame, width: int, height: int) -> np.ndarray | None:
    """``frame`` scaled to ``width`` x ``height`` by FFmpeg's scaler with nearest-pixel ("point") sampling
    and converted to BGR in the same pass; None where the scaler refuses the frame."""
    global _ONE_THREAD
    fmt = frame.format.name
    full = fmt.startswith("yuvj") or int(frame.color_range or 0) == _JPEG_RANGE
    r = getattr(_LOCAL, "reformatter", None)
    if r is None:
        r = _LOCAL.reformatter = VideoReformatter()
    # a range left unspecified is FFmpeg's default for the format, as in the full-size conversion
    kwargs = {"interpolation": "POINT", "src_color_range": "JPEG" if full else None}
    try:
        try:
            out = r.reformat(frame, width, height, "bgr24", **kwargs, **(_ONE_THREAD or {}))
        except TypeError:  # PyAV before the scaler's thread setting: its default
            if not _ONE_THREAD:
                raise
            _ONE_THREAD = None
            out = r.reformat(frame, width, height, "bgr24", **kwargs)
        return out.to_ndarray()
    except (av.error.FFmpegError, ValueError) as e:
        logger.debug("FFmpeg's scaler refused a %s frame (%s); converting it at full size", fmt, e)
        return None


STAMP_LOOKAHEAD = 16  # frames read ahead to choose between presentation and decoding stamps


def best_effort_stamps(
    frames: Iterator[av.VideoFrame], lookahead: int = STAMP_LOOKAHEAD
) -> Iterator[tuple[int | None, av.VideoFrame]]:
    """``(stamp, frame)`` for decoded frames, the stamp being the frame's presentation stamp unless those
    have gone backwards more often than its decoding stamps (the rule of FFmpeg's best-effort timestamp).

    Decoders hand frames out in presentation order, so their true times only grow. Some files label them
    wrongly: an AVI holding DivX's packed B-frames stamps each frame with its packet's number, so the
    presentation stamps of the frames come out swapped in pairs (1, 2, 3, 5, 4, 6, 8, 7, ...) while the
    decoding stamps count up. The backward steps of both are counted over the first ``lookahead`` frames
    before any is handed out, so such a file is timed by its decoding stamps from its first frame; later
    the counts go on as frames arrive."""
    pts_faults = dts_faults = 0
    last_pts: int | None = None
    last_dts: int | None = None

    def observe(pts: int | None, dts: int | None) -> None:
        nonlocal pts_faults, dts_faults, last_pts, last_dts
        if pts is not None:
            pts_faults += last_pts is not None and pts <= last_pts
            last_pts = pts
        if dts is not None:
            dts_faults += last_dts is not None and dts <= last_dts
            last_dts = dts

    def stamp(pts: int | None, dts: int | None) -> int | None:
        return pts if pts is not None and (dts is None or pts_faults <= dts_faults) else dts

    head: list[tuple[int | None, int | None, av.VideoFrame]] = []
    for f in frames:
        pts, dts = f.pts, f.dts  # read once: PyAV builds them on every access
        head.append((pts, dts, f))
        observe(pts, dts)
        if len(head) >= lookahead:
            break
    for pts, dts, f in head:
        yield stamp(pts, dts), f
    del head
    for f in frames:
        pts, dts = f.pts, f.dts
        observe(pts, dts)
        yield stamp(pts, dts), f


def _threads() -> int:
    try:
        return max(0, int(os.environ.get(THREADS_ENV, "0")))
    except ValueError:
        return 0


def skip_loop_filter() -> str:
    """The decoder's skip_loop_filter setting from :data:`LOOP_FILTER_ENV` (default ``"noref"``)."""
    value = os.environ.get(LOOP_FILTER_ENV, "").strip().lower() or "noref"
    if value not in LOOP_FILTER_CHOICES:
        raise ValueError(f"{LOOP_FILTER_ENV}={value!r}: expected one of {', '.join(LOOP_FILTER_CHOICES)}")
    return value


def _pick_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video if not int(s.disposition or 0) & _ATTACHED_PIC]
    if not streams:
        raise VideoError(path, "no video stream (the file reports no frame size)")
    best = container.streams.best("video")
    s = best if best in streams else streams[0]
    ctx = s.codec_context
    tag = getattr(ctx, "codec_tag", "") or ""
    tag = tag.encode("latin-1", "replace") if isinstance(tag, str) else int(tag).to_bytes(4, "little")
    if tag.ljust(4, b"\0")[:4] in TEXT_CODECS or ctx.name in ("ansi", "bintext", "xbin", "idf"):
        raise VideoError(path, "not a video (a text file that FFmpeg would render as text-mode art)")
    if not ctx.width or not ctx.height:
        raise VideoError(path, "no video stream (the file reports no frame size)")
    return s


class AvReader(FrameReader):
    """A :class:`~maxsim.media.video.FrameReader` that decodes with PyAV and yields
    ``(time_s, DecodedFrame)``."""

    def __init__(self, vf: VideoFile) -> None:
        problem = container_problem(vf.fd, vf.size, os.path.splitext(vf.path)[1])
        if problem:
            raise VideoError(vf.path, problem)
        try:
            self.container = av.open(vf.decoder_name)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise VideoError(vf.path, "not a readable video (FFmpeg cannot open it: unknown format, or a "
                                      "damaged or incomplete file)") from e
        try:
            s = _pick_stream(self.container, vf.path)
            s.thread_type = "AUTO"
            s.thread_count = _threads()
            options = dict(s.codec_context.options or {})
            s.codec_context.options = {**options, "skip_loop_filter": skip_loop_filter()}
            rate = s.average_rate or s.guessed_rate
            fps = float(rate) if rate else 0.0
            self.stream = s
            self.file = vf
            self.path = vf.path
            self.cap = None
            self.fps = fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else 0.0
            dur = float(s.duration * s.time_base) if s.duration and s.time_base else 0.0
            self.announced = int(s.frames) if s.frames else max(0, round(dur * self.fps))
            self.timeline = announced_timeline(vf, self.fps, self.announced)
            self.n = 0
            self.last_t = -math.inf
            self.dt = 1.0 / (self.fps or FALLBACK_FPS)
            self._lock = threading.Lock()
            self._start = int(s.start_time) if s.start_time is not None else 0
            tb = Fraction(s.time_base) if s.time_base else None
            self._tb = None if tb is None else (tb.numerator, tb.denominator)  # read for every frame
        except BaseException:
            self.container.close()
            raise

    def decoded(self, batch: int = 1) -> Iterator[list[av.VideoFrame]]:
        """The decoder's frames, in lists of at least ``batch`` frames (but the last), neither timed nor
        converted, so this may run in a background thread. A list is handed out once the next packet has been
        read, just before it goes to the decoder: whoever takes the list then works while this thread waits
        in the decoder (see :mod:`maxsim.media.prefetch`)."""
        container = self.container
        if container is None:
            return
        held: list[av.VideoFrame] = []
        bad = seen = 0
        try:
            for packet in container.demux(self.stream):
                if len(held) >= batch:
                    seen += len(held)
                    yield held
                    held = []
                try:
                    held += packet.decode()
                except av.error.FFmpegError as e:
                    bad += 1
                    logger.debug("%s: decoder rejected a packet after %d frames: %s", self.path,
                                 seen + len(held), e)
                    if bad > _MAX_BAD_PACKETS:
                        break
                    continue
                bad = 0
        except (av.error.FFmpegError, OSError) as e:  # the demuxer stops at damaged or missing data
            logger.debug("%s: reading stopped after %d frames: %s", self.path, seen + len(held), e)
        if held:
            yield held

    def timed(self, batches: Iterable[list[av.VideoFrame]]) -> Iterator[tuple[float, DecodedFrame]]:
        """``(time_s, DecodedFrame)`` for the frames of :meth:`decoded`, each stamped as
        :func:`best_effort_stamps` chooses."""
        time, next_time = self._time, self.next_time
        for stamp, frame in best_effort_stamps(itertools.chain.from_iterable(batches)):
            yield next_time(time(stamp)), DecodedFrame(frame)

    def _time(self, pts: int | None) -> float:
        if pts is None or self._tb is None:
            return math.nan
        # int / int is the correctly rounded float of the exact ratio (as float(Fraction)), without the
        # Fraction arithmetic that costs more per frame than the rest of this method
        num, den = self._tb
        return round((pts - self._start) * num / den * 1000.0 * 1000.0) / 1e6

    def release(self) -> None:
        with self._lock:
            if self.container is not None:
                self.container.close()
                self.container = None
            self.file.close()


def iter_decoded(path: str | os.PathLike, prefetch: int = 0) -> DecodedFrames:
    """Like :func:`~maxsim.media.video.iter_frames`, with :class:`DecodedFrame` frames converted on demand."""
    vf = VideoFile(path)
    try:
        reader = AvReader(vf)
    except BaseException:
        vf.close()
        raise
    return DecodedFrames(reader, prefetch=prefetch)


__all__ = [
    "LOOP_FILTER_CHOICES", "LOOP_FILTER_ENV", "STAMP_LOOKAHEAD", "THREADS_ENV", "AvReader", "DecodedFrame",
    "best_effort_stamps", "iter_decoded", "pick", "shrink", "skip_loop_filter", "yuv_matrix",
]
