"""Reading videos: one decode pass with presentation times, cheap metadata, content hashes, and errors
that name the file and what is wrong with it.

A video is opened once as a file (:class:`VideoFile`): only a regular file is accepted (a named pipe, a
device or a folder named directly is refused at once instead of blocking a reader forever), and native
decoders are handed the descriptor's ``/proc/self/fd/N`` name, never the file's own name, which may not
be valid UTF-8 (OpenCV crashes on such a name).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from maxsim.errors import VideoError
from maxsim.media.containers import TEXT_CODECS, container_problem
from maxsim.media.prefetch import DecodedFrames

logger = logging.getLogger(__name__)

# A decode whose last frame ends before the end of the timeline its container announces is called
# truncated when more than this fraction of that timeline (and more than TRUNCATION_MIN_FRAMES frame
# intervals) is missing. Containers may round their durations or let another stream (audio) run a little
# longer; real truncation loses far more.
TRUNCATION_TOLERANCE = 0.05
TRUNCATION_MIN_FRAMES = 2

_HASH_CHUNK = 1 << 20
FALLBACK_FPS = 25.0  # used only when a container reports neither timestamps nor a usable frame rate
_ATTACHED_PIC = 0x0400  # AV_DISPOSITION_ATTACHED_PIC: a cover image stored as a one-frame video stream
_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of a video, as reported without decoding it."""

    path: str
    duration: float  # seconds: the video stream's timeline as the container announces it
    fps: float  # average frame rate the container reports (0.0 when unknown)
    n_frames: int  # frames the container announces
    width: int
    height: int


class VideoFile:
    """A video file opened for reading: a descriptor on a regular, non-empty, readable file.

    ``decoder_name`` names the open file for native libraries (``/proc/self/fd/N``): it is plain ASCII
    whatever the file's own name, and it is the very file checked here even if the name is replaced
    meanwhile. Opening never blocks: a named pipe, a device, a socket or a folder is refused with a
    :class:`~maxsim.errors.VideoError` before anything reads from it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise VideoError(self.path, "no such file") from e
        except PermissionError as e:
            raise VideoError(self.path, "file is not readable (permission denied)") from e
        except OSError as e:
            try:
                mode = os.stat(self.path).st_mode
            except OSError:
                mode = 0
            if mode and not stat.S_ISREG(mode):
                raise VideoError(self.path, f"not a regular file ({_kind(mode)})") from e
            raise VideoError(self.path, f"cannot read file ({e.strerror or e})") from e
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise VideoError(self.path, f"not a regular file ({_kind(st.st_mode)})")
            if st.st_size == 0:
                raise VideoError(self.path, "empty file (0 bytes)")
            self.size = int(st.st_size)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def decoder_name(self) -> str:
        return f"{_FD_DIR}/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close_and_path(self) -> str:
        """Close it and return its path (for a caller that only wanted the checks)."""
        self.close()
        return self.path

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def content_hash(path: str | os.PathLike) -> str:
    """Hex BLAKE2b-256 digest of the file's bytes (identifies a video independent of its name). Only a
    regular file is read (see :class:`VideoFile`)."""
    h = hashlib.blake2b(digest_size=32)
    with VideoFile(path) as vf:
        try:
            with os.fdopen(os.dup(vf.fd), "rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    h.update(chunk)
        except OSError as e:
            raise VideoError(vf.path, f"cannot read file ({e.strerror or e})") from e
    return h.hexdigest()


def _open(vf: VideoFile) -> cv2.VideoCapture:
    problem = container_problem(vf.fd, vf.size, os.path.splitext(vf.path)[1])
    if problem:
        raise VideoError(vf.path, problem)
    cap = cv2.VideoCapture(vf.decoder_name, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(vf.path, "not a readable video (FFmpeg cannot open it: unknown format, or a "
                                  "damaged or incomplete file)")
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    if fourcc.to_bytes(4, "little") in TEXT_CODECS:
        cap.release()
        raise VideoError(vf.path, "not a video (a text file that FFmpeg would render as text-mode art)")
    if cap.get(cv2.CAP_PROP_FRAME_WIDTH) <= 0 or cap.get(cv2.CAP_PROP_FRAME_HEIGHT) <= 0:
        cap.release()
        raise VideoError(vf.path, "no video stream (the file reports no frame size)")
    return cap


def _sane_fps(fps: float) -> float:
    return fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else 0.0


def _seconds(value: object, time_base: object) -> float | None:
    if not value or not time_base:
        return None
    d = float(Fraction(value) * Fraction(time_base))
    return d if math.isfinite(d) and d > 0 else None


def announced_timeline(vf: VideoFile, fps: float = 0.0, n_frames: int = 0) -> float:
    """The length (seconds, from its first frame) of the video stream's timeline as the container
    announces it; 0.0 when it announces none. MP4/QuickTime: the stream's duration, which honours edit
    lists (a file cut with ``-c copy`` keeps frames before its start that are decoded for reference but
    never shown) and timestamp offsets. AVI: the larger of its duration and its frame count times the frame
    interval (a frame count that includes the zero-size frames marking dropped frames). Others: the
    stream's duration, else the container's (Matroska and WebM announce only the latter). Without any:
    ``n_frames / fps``."""
    try:
        with av.open(vf.decoder_name) as c:
            streams = [s for s in c.streams.video if not int(s.disposition or 0) & _ATTACHED_PIC]
            best = c.streams.best("video")
            s = best if best in streams else (streams[0] if streams else None)
            if s is None:
                raise av.error.FFmpegError(0, "no video stream")
            stream = _seconds(s.duration, s.time_base)
            whole = _seconds(c.duration, Fraction(1, 1_000_000))
            rate = s.average_rate or s.guessed_rate
            counted = float(s.frames / rate) if s.frames and rate else None
            fmt = c.format.name.split(",")
    except (av.error.FFmpegError, OSError, ValueError, ZeroDivisionError) as e:
        logger.debug("%s: PyAV cannot read the container's durations: %s", vf.path, e)
        return n_frames / fps if n_frames and fps else 0.0
    if "avi" in fmt and "mov" not in fmt and "mp4" not in fmt:
        return max(stream or 0.0, counted or 0.0) or whole or 0.0
    return stream or whole or 0.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container metadata (duration, frame rate, frame count, size) without decoding the frames.
    ``duration`` is :func:`announced_timeline`; the decoded one :func:`iter_frames` observes wins."""
    with VideoFile(path) as vf:
        cap = _open(vf)
        try:
            fps = _sane_fps(cap.get(cv2.CAP_PROP_FPS))
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            n_frames = int(n) if math.isfinite(n) and n > 0 else 0
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
        duration = announced_timeline(vf, fps, n_frames)
    return VideoInfo(vf.path, duration, fps, n_frames, width, height)


def iter_frames(path: str | os.PathLike, prefetch: int = 0) -> DecodedFrames:
    """Decode the video once, yielding ``(time_s, frame)`` with ``frame`` a BGR uint8 ``(H, W, 3)``.

    Times are the decoder's presentation times (safe for variable frame rates) in whole microseconds,
    strictly increasing; a missing, negative or non-increasing one continues from the previous frame by
    the last interval (the first frame: 0). The iterator's ``duration``: the end of the last frame so far.

    ``prefetch > 0`` decodes in a background thread, up to about that many frames ahead of the consumer,
    so that decoding overlaps the consumer's per-frame work; it hands frames over a few at a time (see
    :mod:`maxsim.media.prefetch`; memory: up to ``prefetch`` + 8 full-size frames).

    Raises :class:`VideoError` at once for a missing, empty, unreadable or non-regular file or one whose
    container structure is broken, and during iteration for a video with no decodable frame or one that
    is truncated: its decoded frames end well before the timeline its container announces (see
    :func:`announced_timeline`). A truncated video raises after its decodable frames were yielded, so
    consumers must not commit results before the iterator is exhausted.
    """
    vf = VideoFile(path)
    try:
        cap = _open(vf)
    except BaseException:
        vf.close()
        raise
    return DecodedFrames(FrameReader(vf, cap), prefetch=prefetch)


class FrameReader:
    """Reads frames and their times from an open capture; keeps what the completeness check needs."""

    def __init__(self, vf: VideoFile, cap: cv2.VideoCapture):
        self.file = vf
        self.path = vf.path
        self.cap: cv2.VideoCapture | None = cap
        self.fps = _sane_fps(cap.get(cv2.CAP_PROP_FPS))
        claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.announced = int(claimed) if math.isfinite(claimed) and claimed > 0 else 0
        self.timeline = announced_timeline(vf, self.fps, self.announced)
        self.n = 0
        self.last_t = -math.inf
        self.dt = 1.0 / (self.fps or FALLBACK_FPS)  # interval of the last frame
        self._lock = threading.Lock()  # release() may be reached from the decode thread and the consumer

    def decoded(self, batch: int = 1) -> Iterator[list[tuple[np.ndarray, float]]]:
        """The decoded BGR frames, each with the capture's position (ms), in lists of at least ``batch``
        frames (but the last); nothing timed here, so this may run in a background thread (see
        :mod:`maxsim.media.prefetch`)."""
        cap = self.cap
        if cap is None:
            return
        held: list[tuple[np.ndarray, float]] = []
        seen = 0
        while True:
            if len(held) >= batch:
                seen += len(held)
                yield held
                held = []
            try:
                ok, frame = cap.read()
            except cv2.error as e:  # some builds raise instead of returning False on corrupt data
                logger.debug("%s: decoder error after %d frames: %s", self.path, seen + len(held), e)
                break
            if not ok or frame is None:
                break
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            elif frame.shape[2] == 4:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
            held.append((frame, cap.get(cv2.CAP_PROP_POS_MSEC)))
        if held:
            yield held

    def timed(self, batches: Iterable[list[tuple[np.ndarray, float]]]) -> Iterator[tuple[float, np.ndarray]]:
        """``(time_s, frame)`` for the frames of :meth:`decoded`."""
        for batch in batches:
            for frame, ms in batch:
                yield self.next_time(round(ms * 1000.0) / 1e6 if math.isfinite(ms) else math.nan), frame

    def finish(self) -> None:
        """End of stream: release the decoder and check that the video was complete."""
        self.release()
        self.check_complete()

    def next_time(self, t: float) -> float:
        """The next frame's time from its stamp ``t`` (s), repaired as :func:`iter_frames` describes."""
        ok = math.isfinite(t) and t >= 0.0
        if self.n == 0:
            t = t if ok else 0.0
        elif not ok or t <= self.last_t:
            t = round(self.last_t + self.dt, 6)
        else:
            self.dt = round(t - self.last_t, 6)
        self.last_t = t
        self.n += 1
        return t

    def end(self) -> float:
        """End (s) of the last frame decoded: its time plus the last interval, but not past a timeline the
        container announces to end after that frame starts (a sparse AVI's frame lasts a slot, not a gap)."""
        end = round(self.last_t + self.dt, 6)
        return self.timeline if self.last_t < self.timeline < end else end

    def check_complete(self) -> None:
        """Raise :class:`VideoError` when nothing was decoded, or when the decoded frames end well before
        the timeline the container announces (the file was cut or its end is damaged)."""
        if self.n == 0:
            raise VideoError(self.path, "no decodable video frame")
        end, expected = self.end(), self.timeline
        missing = expected - end
        if expected and missing > max(TRUNCATION_MIN_FRAMES * self.dt, TRUNCATION_TOLERANCE * expected):
            frames = (f"{self.n} of the {self.announced} frames it announces" if self.announced
                      else f"{self.n} frames decoded")
            raise VideoError(
                self.path,
                f"truncated or corrupt video: decoding stopped at {end:.2f} s of the {expected:.2f} s its "
                f"container announces ({frames})",
            )
        if expected and missing > 0:
            logger.debug("%s: decoded up to %.3f s of an announced %.3f s", self.path, end, expected)

    def release(self) -> None:
        with self._lock:
            if self.cap is not None:
                self.cap.release()
                self.cap = None
            self.file.close()


# A seek lands on a key frame before the wanted time and decodes forward; start it this much earlier so that
# containers whose seek is approximate still land before the first wanted frame.
_SEEK_PREROLL = 1.0
_SEEK_MIN = 3.0  # times closer than this to the start are decoded from the start


def frames_at(path: str | os.PathLike, times: list[float] | np.ndarray) -> list[tuple[float, np.ndarray]]:
    """The decoded frames nearest to each of ``times`` (seconds), as ``(frame time, BGR uint8 frame)`` in
    the order of ``times``: for times that :func:`iter_frames` reported (the frame times an index keeps),
    exactly those frames.

    Seeks to just before the earliest time when it is far from the start, then decodes forward to the
    latest; when the seek lands after the earliest time or the decoder reports no times after it, decodes
    from the start instead. Raises :class:`VideoError` for a missing or unreadable file, and for one with
    no decodable frame up to the earliest time asked for.
    """
    wanted = np.asarray(times, dtype=np.float64).reshape(-1)
    if wanted.size == 0:
        return []
    if not np.all(np.isfinite(wanted)):
        raise ValueError(f"{path}: frame times must be finite numbers of seconds, got {wanted.tolist()}")
    spath = VideoFile(path).close_and_path()  # a missing, empty or non-regular file fails here
    order = np.argsort(wanted, kind="stable")
    first = float(wanted[order[0]])
    start = first - _SEEK_PREROLL if first >= _SEEK_MIN else 0.0
    got = _decode_nearest(spath, wanted[order], start) if start > 0 else None
    if got is None:
        got = _decode_nearest(spath, wanted[order], 0.0)
    if got is None:
        raise VideoError(spath, f"no decodable video frame up to {first:.2f} s")
    out: list[tuple[float, np.ndarray]] = [got[0]] * len(wanted)
    for rank, i in enumerate(order):
        out[int(i)] = got[rank]
    return out


def _decode_nearest(path: str, wanted: np.ndarray, start: float) -> list[tuple[float, np.ndarray]] | None:
    """For sorted ``wanted`` times, the nearest decoded frames from ``start`` on (a seek when > 0);
    None when the seek overshot the first time or the video gave no usable frame."""
    vf = VideoFile(path)
    try:
        cap = _open(vf)
    except BaseException:
        vf.close()
        raise
    try:
        if start > 0:
            cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0)
        picked: list[tuple[float, np.ndarray]] = []
        prev: tuple[float, np.ndarray] | None = None
        last_t = -math.inf
        j = 0
        while j < len(wanted):
            try:
                ok, frame = cap.read()
            except cv2.error:
                ok, frame = False, None
            if not ok or frame is None:
                break
            ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if not math.isfinite(ms) or ms < 0:
                if start > 0:
                    return None  # no times after a seek: cannot tell where it landed
                step = 1.0 / (_sane_fps(cap.get(cv2.CAP_PROP_FPS)) or FALLBACK_FPS)
                t = 0.0 if prev is None else last_t + step
            else:
                t = round(ms * 1000.0) / 1e6
            if t <= last_t:
                t = last_t + 1e-6
            if prev is None and start > 0 and t > wanted[0] + 1e-6:
                return None  # the seek went past the first frame asked for
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            elif frame.shape[2] == 4:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
            while j < len(wanted) and t >= wanted[j] - 1e-6:
                use_prev = prev is not None and abs(prev[0] - wanted[j]) < abs(t - wanted[j])
                picked.append(prev if use_prev else (t, frame))
                j += 1
            prev, last_t = (t, frame), t
        if prev is None:
            return None
        picked += [prev] * (len(wanted) - j)  # times past the last frame: the last frame
        return picked
    finally:
        cap.release()
        vf.close()
