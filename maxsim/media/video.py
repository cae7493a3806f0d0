"""Reading videos: one decode pass with presentation times, cheap metadata, content hashes, and errors
that name the file and what is wrong with it."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maxsim.errors import VideoError

logger = logging.getLogger(__name__)

# A decode that delivers fewer frames than the container announces is called truncated when more than
# this fraction (and more than TRUNCATION_MIN_MISSING frames) is missing. Containers that only estimate
# their frame count (Matroska, WebM) can be off by a frame or two; real truncation loses far more.
TRUNCATION_TOLERANCE = 0.05
TRUNCATION_MIN_MISSING = 2

_HASH_CHUNK = 1 << 20
FALLBACK_FPS = 25.0  # used only when a container reports neither timestamps nor a usable frame rate


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of a video, as reported without decoding it."""

    path: str
    duration: float  # seconds
    fps: float  # average frame rate the container reports (0.0 when unknown)
    n_frames: int  # frames the container announces
    width: int
    height: int


def _check_file(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "no such file")
    if not p.is_file():
        raise VideoError(p, "not a regular file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise VideoError(p, f"cannot read file ({e.strerror or e})") from e
    if size == 0:
        raise VideoError(p, "empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoError(p, "file is not readable (permission denied)")
    return str(p)


def content_hash(path: str | os.PathLike) -> str:
    """Hex BLAKE2b-256 digest of the file's bytes (identifies a video independent of its name)."""
    p = Path(path)
    h = hashlib.blake2b(digest_size=32)
    try:
        with open(p, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
    except FileNotFoundError as e:
        raise VideoError(p, "no such file") from e
    except IsADirectoryError as e:
        raise VideoError(p, "not a regular file") from e
    except OSError as e:
        raise VideoError(p, f"cannot read file ({e.strerror or e})") from e
    return h.hexdigest()


_ISOBMFF_EXT = {".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".mj2", ".qt"}
_ISOBMFF_TOP = {
    b"ftyp",
    b"moov",
    b"mdat",
    b"free",
    b"skip",
    b"wide",
    b"pnot",
    b"uuid",
    b"styp",
    b"sidx",
    b"moof",
    b"mfra",
    b"meta",
    b"pdin",
    b"prft",
    b"emsg",
    b"junk",
    b"PICT",
    b"\0\0\0\0",
}
_SIGNATURES = {  # extension -> (offset, magic, container name)
    ".mkv": (0, b"\x1a\x45\xdf\xa3", "Matroska"),
    ".webm": (0, b"\x1a\x45\xdf\xa3", "WebM"),
    ".avi": (8, b"AVI ", "AVI"),
    ".flv": (0, b"FLV", "FLV"),
}
# Codecs FFmpeg uses to render text files (ANSI art, NFO, ...) as "video": never a real video.
_TEXT_CODECS = {b"ansi", b"bint", b"xbin", b"idf\0"}


def _isobmff_problem(path: str, size: int) -> str | None:
    """Why an MP4/MOV file is unusable judging by its top-level boxes, or None if they look sound."""
    pos, seen = 0, []
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box_size, typ = int.from_bytes(head[:4], "big"), head[4:8]
            if not seen and typ not in _ISOBMFF_TOP:
                return (
                    "not an MP4/QuickTime file (no 'ftyp' header box: damaged, cut at the start, or "
                    "another format with the wrong extension)"
                )
            if box_size == 1:
                box_size = int.from_bytes(head[8:16], "big")
            elif box_size == 0:  # box extends to the end of the file
                box_size = size - pos
            if box_size < 8:
                return f"corrupt MP4: invalid size of box '{typ.decode('latin1')}' at byte {pos}"
            seen.append(typ)
            if pos + box_size > size:
                return (
                    f"truncated video: the file ends at byte {size}, inside its "
                    f"'{typ.decode('latin1')}' box which should end at byte {pos + box_size}"
                )
            pos += box_size
    if pos < 8:
        return "not an MP4/QuickTime file (shorter than one box header)"
    if b"moov" not in seen and b"moof" not in seen:
        return "incomplete MP4: no 'moov' index box (the recording was not finalised or the file was cut)"
    return None


def _check_format(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
    if ext in _ISOBMFF_EXT or head[4:8] == b"ftyp":
        problem = _isobmff_problem(path, size)
        if problem:
            raise VideoError(path, problem)
    elif ext in _SIGNATURES:
        offset, magic, name = _SIGNATURES[ext]  # every signature lies within the first 12 bytes
        if head[offset : offset + len(magic)] != magic:
            raise VideoError(
                path,
                f"not a valid {name} file (its signature is missing: damaged, cut at the "
                f"start, or another format with the wrong extension)",
            )


def _open(path: str) -> cv2.VideoCapture:
    _check_format(path)
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(
            path,
            "not a readable video (FFmpeg cannot open it: unknown format, or a damaged or incomplete file)",
        )
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    if fourcc.to_bytes(4, "little") in _TEXT_CODECS:
        cap.release()
        raise VideoError(path, "not a video (a text file that FFmpeg would render as text-mode art)")
    if cap.get(cv2.CAP_PROP_FRAME_WIDTH) <= 0 or cap.get(cv2.CAP_PROP_FRAME_HEIGHT) <= 0:
        cap.release()
        raise VideoError(path, "no video stream (the file reports no frame size)")
    return cap


def _sane_fps(fps: float) -> float:
    return fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else 0.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container metadata (duration, frame rate, frame count, size) without decoding the frames.

    ``duration`` is ``n_frames / fps`` as announced by the container; the decoded duration that
    :func:`iter_frames` observes is authoritative when the two differ.
    """
    spath = _check_file(path)
    cap = _open(spath)
    try:
        fps = _sane_fps(cap.get(cv2.CAP_PROP_FPS))
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        n_frames = int(n) if math.isfinite(n) and n > 0 else 0
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    duration = n_frames / fps if n_frames and fps else 0.0
    return VideoInfo(spath, duration, fps, n_frames, width, height)


def iter_frames(path: str | os.PathLike, prefetch: int = 0) -> DecodedFrames:
    """Decode the video once, yielding ``(time_s, frame)`` with ``frame`` a BGR uint8 ``(H, W, 3)``.

    Times are the decoder's presentation times (safe for variable frame rates) in whole microseconds,
    strictly increasing; where the container gives none (or non-increasing ones) the time continues from
    the previous frame by the last frame interval. The returned iterator's ``duration`` is the end of the
    last frame decoded so far (its time plus its interval): the video's duration once exhausted.

    ``prefetch > 0`` decodes in a background thread, up to that many frames ahead of the consumer, so
    that decoding overlaps the consumer's per-frame work (memory: ``prefetch`` full-size frames).

    Raises :class:`VideoError` at once for a missing, empty or unreadable file, and during iteration for
    a video with no decodable frame or one that is truncated (it ends well before the frame count its
    container announces). A truncated video raises after its decodable frames were yielded, so
    consumers must not commit results before the iterator is exhausted.
    """
    spath = _check_file(path)
    return DecodedFrames(_Reader(spath, _open(spath)), prefetch=prefetch)


class _Reader:
    """Reads frames and their times from an open capture; keeps the counts the checks need."""

    def __init__(self, path: str, cap: cv2.VideoCapture):
        self.path = path
        self.cap: cv2.VideoCapture | None = cap
        self.fps = _sane_fps(cap.get(cv2.CAP_PROP_FPS))
        claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.announced = int(claimed) if math.isfinite(claimed) and claimed > 0 else 0
        self.n = 0
        self.last_t = -math.inf
        self.dt = 1.0 / (self.fps or FALLBACK_FPS)  # interval of the last frame
        self.done = False

    def read(self) -> tuple[float, np.ndarray] | None:
        """The next frame, or None at the end (after checking that the video was complete)."""
        cap = self.cap
        if cap is None or self.done:
            return None
        try:
            ok, frame = cap.read()
        except cv2.error as e:  # some builds raise instead of returning False on corrupt data
            logger.debug("%s: decoder error after %d frames: %s", self.path, self.n, e)
            ok, frame = False, None
        if not ok or frame is None:
            self.done = True
            self.release()
            self.check_complete()
            return None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        t = round(ms * 1000.0) / 1e6 if math.isfinite(ms) and ms >= 0.0 else math.nan
        if self.n == 0:
            if not math.isfinite(t):
                t = 0.0
        elif not math.isfinite(t) or t <= self.last_t:
            t = round(self.last_t + self.dt, 6)
        else:
            self.dt = round(t - self.last_t, 6)
        self.last_t = t
        self.n += 1
        return t, frame

    def check_complete(self) -> None:
        n, claimed = self.n, self.announced
        if n == 0:
            raise VideoError(self.path, "no decodable video frame")
        missing = claimed - n
        if claimed and missing > max(TRUNCATION_MIN_MISSING, TRUNCATION_TOLERANCE * claimed):
            expected = f" of {claimed / self.fps:.2f} s" if self.fps else ""
            end = round(self.last_t + self.dt, 6)
            raise VideoError(
                self.path,
                f"truncated or corrupt video: decoding stopped after {n} of the {claimed} frames the "
                f"container announces (at {end:.2f} s{expected})",
            )
        if claimed and missing > 0:
            logger.debug("%s: decoded %d of %d announced frames", self.path, n, claimed)

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


_END = object()


def _produce(reader: _Reader, q: queue.Queue, stop: threading.Event) -> None:
    """Background decoding: frames into ``q``, then _END or the exception that ended it."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        while not stop.is_set():
            item = reader.read()
            if item is None or not put(item):
                break
        put(_END)
    except BaseException as e:  # handed to the consumer, raised there
        put(e)
    finally:
        reader.release()


class DecodedFrames(Iterator[tuple[float, np.ndarray]]):
    """The single decode pass over one video (see :func:`iter_frames`); closes the decoder when done."""

    def __init__(self, reader: _Reader, prefetch: int = 0):
        self._reader = reader
        self.path = reader.path
        self.fps = reader.fps  # the container's average frame rate, 0.0 if unknown
        self.announced_frames = reader.announced  # frame count the container announces, 0 if unknown
        self._prefetch = max(0, int(prefetch))
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    @property
    def n_frames(self) -> int:
        """Frames decoded so far."""
        return self._reader.n

    @property
    def duration(self) -> float:
        """End time (s) of the last frame decoded so far (its time plus its interval); 0.0 before."""
        r = self._reader
        return round(r.last_t + r.dt, 6) if r.n else 0.0

    def __iter__(self) -> DecodedFrames:
        return self

    def __next__(self) -> tuple[float, np.ndarray]:
        if self._finished:
            raise StopIteration
        if not self._prefetch:
            try:
                item = self._reader.read()
            except BaseException:
                self._finished = True
                raise
        else:
            if self._thread is None:
                self._queue = queue.Queue(maxsize=self._prefetch)
                self._thread = threading.Thread(
                    target=_produce,
                    args=(self._reader, self._queue, self._stop),
                    daemon=True,
                    name=f"decode {os.path.basename(self.path)}",
                )
                self._thread.start()
            assert self._queue is not None
            item = self._queue.get()
            if item is _END:
                item = None
            elif isinstance(item, BaseException):
                self._finished = True
                self._thread.join()
                raise item
        if item is None:
            self._finished = True
            if self._thread is not None:
                self._thread.join()
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop decoding and release the decoder."""
        self._finished = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._reader.release()

    def __enter__(self) -> DecodedFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


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
    spath = _check_file(path)
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
    cap = _open(path)
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
