"""The decode pass of :func:`~maxsim.media.clips.iter_clips` through PyAV, converting only what is used.

OpenCV's reader converts every decoded frame to a full-size BGR image, which on 720p video costs about as
much as decoding it. The single decode pass needs far less: cut detection looks at a copy about 256 pixels
wide and the sampler keeps a couple of frames a second. Here frames stay in the decoder's own format
(:class:`DecodedFrame`): a small BGR copy comes straight out of FFmpeg's scaler (one pass that scales and
converts), and a full-size BGR image is made only for a frame that something asks for.

Times, the completeness check and the background decoding are those of
:func:`~maxsim.media.video.iter_frames` (the same :class:`~maxsim.media.video.FrameReader` clock): a
frame's time is its presentation time from the stream's start, as OpenCV reports it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterator
from fractions import Fraction

import av
import cv2
import numpy as np

from maxsim.errors import VideoError
from maxsim.media.containers import TEXT_CODECS, container_problem
from maxsim.media.video import FALLBACK_FPS, DecodedFrames, FrameReader, VideoFile, announced_timeline

logger = logging.getLogger(__name__)

# Decoder threads (FFmpeg frame threading); 0 lets FFmpeg choose from the cores it sees.
THREADS_ENV = "MAXSIM_DECODE_THREADS"
_ATTACHED_PIC = 0x0400
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
        """A ``width`` x ``height`` BGR uint8 copy (bilinear, as ``cv2.resize``).

        For 8-bit 4:2:0 frames (nearly all video) the three planes are scaled where they lie and only the
        small result is converted to BGR (BT.601), which costs a fraction of a full-size conversion; other
        formats are converted at full size first."""
        width, height = int(width), int(height)
        if (width, height) == (self.width, self.height):
            return self.bgr()
        key = (width, height)
        if key not in self._small:
            small = None
            if self._frame.format.name in _PLANAR_420 and width % 2 == 0 and height % 2 == 0:
                small = _scaled_420(self._frame, width, height)
            if small is None:
                small = cv2.resize(self.bgr(), key, interpolation=cv2.INTER_LINEAR)
            self._small[key] = small
        return self._small[key]


_PLANAR_420 = ("yuv420p", "yuvj420p")


def _plane(frame: av.VideoFrame, i: int, w: int, h: int) -> np.ndarray | None:
    p = frame.planes[i]
    a = np.frombuffer(p, np.uint8)
    if p.line_size < w or a.size < p.line_size * h:
        return None
    return a[: p.line_size * h].reshape(h, p.line_size)[:, :w]


def _scaled_420(frame: av.VideoFrame, width: int, height: int) -> np.ndarray | None:
    """Scale the planes of an 8-bit 4:2:0 frame to ``width`` x ``height`` and convert that to BGR."""
    w, h = frame.width, frame.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    planes = [_plane(frame, 0, w, h), _plane(frame, 1, cw, ch), _plane(frame, 2, cw, ch)]
    if any(p is None for p in planes):
        return None
    out = np.empty((height * 3 // 2, width), np.uint8)
    q = height // 4 if height % 4 == 0 else None
    if q is None:  # I420 needs the chroma planes to fill whole rows of the luma width
        return None
    out[:height] = cv2.resize(planes[0], (width, height), interpolation=cv2.INTER_LINEAR)
    for k, p in enumerate(planes[1:]):
        small = cv2.resize(p, (width // 2, height // 2), interpolation=cv2.INTER_LINEAR)
        out[height + k * q: height + (k + 1) * q] = small.reshape(q, width)
    return cv2.cvtColor(out, cv2.COLOR_YUV2BGR_I420)


def _threads() -> int:
    try:
        return max(0, int(os.environ.get(THREADS_ENV, "0")))
    except ValueError:
        return 0


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
            self.done = False
            self._lock = threading.Lock()
            self._start = int(s.start_time) if s.start_time is not None else 0
            self._tb = Fraction(s.time_base) if s.time_base else None
            self._frames = self._decode()
        except BaseException:
            self.container.close()
            raise

    def _decode(self) -> Iterator[av.VideoFrame]:
        bad = 0
        try:
            for packet in self.container.demux(self.stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    bad += 1
                    logger.debug("%s: decoder rejected a packet after %d frames: %s", self.path, self.n, e)
                    if bad > _MAX_BAD_PACKETS:
                        return
                    continue
                bad = 0
                yield from frames
        except (av.error.FFmpegError, OSError) as e:  # the demuxer stops at damaged or missing data
            logger.debug("%s: reading stopped after %d frames: %s", self.path, self.n, e)

    def _time(self, frame: av.VideoFrame) -> float:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None or self._tb is None:
            return math.nan
        return round(float((pts - self._start) * self._tb) * 1000.0 * 1000.0) / 1e6

    def read(self) -> tuple[float, DecodedFrame] | None:  # type: ignore[override]
        """The next frame, or None at the end (after checking that the video was complete)."""
        if self.done or self.container is None:
            return None
        frame = next(self._frames, None)
        if frame is None:
            self.finish()
            return None
        return self.next_time(self._time(frame)), DecodedFrame(frame)

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


__all__ = ["THREADS_ENV", "AvReader", "DecodedFrame", "iter_decoded"]
