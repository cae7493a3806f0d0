"""Cutting a video's timeline into segments: fixed spans or detected scenes (PySceneDetect), normalised to
cover ``[0, duration]`` exactly with bounded segment lengths.

A :class:`Segmenter` is a recipe (its ``name`` records the settings in the index); ``start()`` gives a
per-video run that is fed the frames of the single decode pass and returns the segments at ``finish``.
"""

from __future__ import annotations

import bisect
import copy
import heapq
import importlib
import inspect
import logging
import math
import os
from collections.abc import Iterable
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from maxsim.types import Segment
from maxsim.video import _FALLBACK_FPS, iter_frames

_EPS = 1e-9
logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Contracts


@runtime_checkable
class SegmenterRun(Protocol):
    """Segmentation state of one video: fed every decoded frame in time order, then finished.

    A run may also offer ``final_segments(t: float) -> list[Segment]``: the segments that can no longer
    change once the frames up to time ``t`` were decoded (fed), a growing prefix of what ``finish``
    returns. :func:`maxsim.frames.iter_clips` then yields clips while decoding (see there).
    """

    def feed(self, t: float, frame_bgr: np.ndarray) -> None: ...

    def finish(self, duration: float) -> list[Segment]: ...


@runtime_checkable
class Segmenter(Protocol):
    """A segmentation recipe. ``name`` is a stable string with the settings (recorded in the index).

    When ``needs_frames`` is False a run may be fed no frame at all (only ``finish(duration)``).
    """

    @property
    def name(self) -> str: ...

    @property
    def needs_frames(self) -> bool: ...

    def start(self) -> SegmenterRun: ...

    def segment(self, path: str | os.PathLike) -> list[Segment]: ...


def run_segmenter(segmenter: Segmenter, path: str | os.PathLike) -> list[Segment]:
    """Decode ``path`` once and segment it (the video's duration is that of its decoded frames)."""
    run = segmenter.start()
    with iter_frames(path, prefetch=8) as frames:
        if segmenter.needs_frames:
            for t, frame in frames:
                run.feed(t, frame)
        else:
            for _ in frames:
                pass
    return run.finish(frames.duration)


# --------------------------------------------------------------------------------------------------
# Normalisation shared by every segmenter


def _check_duration(duration: float) -> float:
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0.0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    return duration


def normalize_segments(
    cuts_or_segments: Iterable[float] | Iterable[Segment] | Iterable[tuple[float, float]],
    duration: float,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> list[Segment]:
    """Turn cut times (or rough segments) into segments that tile ``[0, duration]`` exactly.

    Cut times outside ``(0, duration)`` are ignored; segments contribute their starts and ends as cuts.
    Segments shorter than ``min_seconds`` are merged into their shorter neighbour (repeatedly, shortest
    first) unless the whole video is shorter; segments longer than ``max_seconds`` are split into equal
    parts. The first segment starts at 0.0, the last ends at ``duration`` and each end equals the next
    start (the same float). ``max_seconds`` must be at least ``2 * min_seconds`` so splitting never
    creates a segment below the minimum.
    """
    duration = _check_duration(duration)
    min_seconds, max_seconds = _check_limits(min_seconds, max_seconds)
    points: list[float] = []
    for item in cuts_or_segments:
        if isinstance(item, Segment):
            points += [item.start, item.end]
        elif isinstance(item, (tuple, list)):
            points += [float(item[0]), float(item[1])]
        else:
            points.append(float(item))
    inner = sorted({p for p in points if math.isfinite(p) and _EPS < p < duration - _EPS})
    bounds = [0.0]
    for p in inner:  # drop cuts closer than _EPS to the previous one
        if p - bounds[-1] > _EPS:
            bounds.append(p)
    if duration - bounds[-1] <= _EPS and len(bounds) > 1:
        bounds.pop()
    bounds.append(duration)

    return _to_segments(_normalize_bounds(bounds, min_seconds, max_seconds))


def _check_limits(min_seconds: float, max_seconds: float | None) -> tuple[float, float | None]:
    min_seconds = float(min_seconds or 0.0)
    if not math.isfinite(min_seconds) or min_seconds < 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds!r}")
    if max_seconds is not None:
        max_seconds = float(max_seconds)
        if not (max_seconds > 0) or math.isnan(max_seconds):
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds!r}")
        if max_seconds < 2 * min_seconds:
            raise ValueError(
                f"max_seconds ({max_seconds}) must be at least twice min_seconds ({min_seconds}) so that "
                "splitting long segments cannot produce segments below the minimum"
            )
    return min_seconds, max_seconds


def _normalize_bounds(bounds: list[float], min_seconds: float, max_seconds: float | None) -> list[float]:
    """Merge short and split long segments of the sorted, distinct ``bounds`` (first and last kept)."""
    if min_seconds > 0 and len(bounds) > 2:
        bounds = _merge_short(bounds, min_seconds)
    if max_seconds is not None:
        bounds = _split_long(bounds, max_seconds)
    return bounds


def _to_segments(bounds: list[float]) -> list[Segment]:
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _merge_short(bounds: list[float], min_seconds: float) -> list[float]:
    """Repeatedly merge the shortest segment below ``min_seconds`` (leftmost on ties) into its shorter
    neighbour (the left one on ties); O(n log n) with a heap over a linked list of segments."""
    n = len(bounds) - 1
    start = list(bounds[:-1])
    end = list(bounds[1:])
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    alive = [True] * n
    heap = [(end[i] - start[i], i) for i in range(n)]
    heapq.heapify(heap)
    count = n
    while heap and count > 1:
        length, i = heapq.heappop(heap)
        if not alive[i] or length != end[i] - start[i]:
            continue  # stale entry
        if length >= min_seconds - _EPS:
            break
        p, q = prev[i], nxt[i]
        if p < 0:
            left = i
        elif q < 0:
            left = p
        else:
            left = p if end[p] - start[p] <= end[q] - start[q] else i
        right = nxt[left]
        end[left] = end[right]  # merge right into left
        alive[right] = False
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        count -= 1
        heapq.heappush(heap, (end[left] - start[left], left))
    return [start[i] for i in range(n) if alive[i]] + [bounds[-1]]


def _split_long(bounds: list[float], max_seconds: float) -> list[float]:
    out = [bounds[0]]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        k = max(1, math.ceil((b - a) / max_seconds - 1e-9))
        out += [a + (b - a) * i / k for i in range(1, k)]
        out.append(b)
    return out


# --------------------------------------------------------------------------------------------------
# Fixed spans


class _FixedRun:
    def __init__(self, seconds: float):
        self._seconds = seconds
        self._final: list[Segment] = []  # grows as frames arrive: called once per sampled frame

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        pass

    def final_segments(self, t: float) -> list[Segment]:
        """The spans that end at or before ``t`` (a decoded frame's time, so before the video's end)."""
        n = max(0, math.floor(t / self._seconds + 1e-9))
        while n > 0 and n * self._seconds > t:
            n -= 1
        for k in range(len(self._final), n):
            self._final.append(Segment(k * self._seconds, (k + 1) * self._seconds))
        return self._final

    def finish(self, duration: float) -> list[Segment]:
        return fixed_segments(duration, self._seconds)


def fixed_segments(duration: float, seconds: float) -> list[Segment]:
    """Spans ``[k * seconds, (k + 1) * seconds)`` covering ``[0, duration]``, the last one shorter."""
    duration = _check_duration(duration)
    n = max(1, math.ceil(duration / seconds - 1e-9))
    bounds = [k * seconds for k in range(n)] + [duration]
    return [Segment(bounds[i], bounds[i + 1]) for i in range(n)]


class FixedSegmenter:
    """Fixed-length segments of ``seconds`` each; the last one is shorter. Needs no frames."""

    needs_frames = False

    def __init__(self, seconds: float = 10.0):
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"FixedSegmenter: seconds must be a positive number, got {seconds!r}")
        self.seconds = seconds

    @property
    def name(self) -> str:
        return f"fixed(seconds={self.seconds:g})"

    def start(self) -> _FixedRun:
        return _FixedRun(self.seconds)

    def segment(self, path: str | os.PathLike) -> list[Segment]:
        """Segment a video file (decodes it to learn its exact duration)."""
        return run_segmenter(self, path)

    def __repr__(self) -> str:
        return f"FixedSegmenter(seconds={self.seconds!r})"


# --------------------------------------------------------------------------------------------------
# Detected scenes (PySceneDetect)

# Detector name -> (class name in scenedetect.detectors, our default keyword arguments). Defaults are the
# best all-round settings measured for PySceneDetect 0.7 (AdaptiveDetector: threshold 3.5, window 3,
# 0.6 s minimum scene length); min_scene_len is given in seconds (a float) so it is frame-rate independent.
DETECTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "adaptive": ("AdaptiveDetector", {"adaptive_threshold": 3.5, "window_width": 3, "min_scene_len": 0.6}),
    "content": ("ContentDetector", {"threshold": 27.0, "min_scene_len": 0.6}),
    "histogram": ("HistogramDetector", {"threshold": 0.2, "min_scene_len": 0.6}),
    "hash": ("HashDetector", {"threshold": 0.35, "min_scene_len": 0.6}),
    "threshold": ("ThresholdDetector", {"threshold": 12.0, "min_scene_len": 0.6}),
}


def _bounded_lag_classes() -> tuple[type, ...]:
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector

    return (AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector)


DETECTION_WIDTH = 256  # frames wider than this are downscaled for detection, as SceneManager does


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if hasattr(v, "name") and hasattr(v, "value"):  # enums
        return str(v.name)
    return repr(v) if isinstance(v, str) else str(v)


def _detector_settings(det: Any) -> dict[str, Any]:
    """Constructor settings readable back from a detector instance (for its recorded name)."""
    out = {}
    try:
        params = inspect.signature(type(det).__init__).parameters
    except (TypeError, ValueError):
        return out
    for p in params:
        if p == "self":
            continue
        for attr in (p, "_" + p):
            v = getattr(det, attr, None)
            if isinstance(v, (bool, int, float, str)) or (hasattr(v, "name") and hasattr(v, "value")):
                out[p] = v
                break
    return out


class _CutStream:
    """Cut times arriving in time order -> the normalised segments, released as soon as they are final.

    A cut whose raw neighbouring segments are both at least ``min_seconds`` long is a firewall: no merge
    ever crosses it, so the segments before it are final and equal to those the whole cut list would
    give (:func:`normalize_segments`). The segment after the newest cut is known to be long enough
    once the decoder is ``min_seconds + lag_s`` past it (``lag_s``: how far behind the current frame a
    detector may still place a cut; None: only a later cut proves it).
    """

    def __init__(self, min_seconds: float, max_seconds: float | None, lag_s: float | None):
        self._min, self._max = _check_limits(min_seconds, max_seconds)
        self.lag_s = lag_s
        self._fixed = 0.0  # time up to which segments are final
        self._open: list[float] = []  # sorted cuts after _fixed
        self.final: list[Segment] = []

    def add(self, cut: float) -> None:
        cut = float(cut)
        if not math.isfinite(cut) or cut <= self._fixed + _EPS:
            if math.isfinite(cut) and cut > _EPS:
                logger.debug(
                    "scene cut at %.3f s arrived after segments up to %.3f s were final", cut, self._fixed
                )
            return
        i = bisect.bisect_left(self._open, cut)
        if (i < len(self._open) and self._open[i] - cut <= _EPS) or (
            i > 0 and cut - self._open[i - 1] <= _EPS
        ):
            return
        self._open.insert(i, cut)

    def advance(self, t: float) -> list[Segment]:
        """Release what is final once the decoder has reached time ``t``; returns all final segments."""
        seq = [self._fixed, *self._open]
        floor = self._min - _EPS
        best = 0
        for j in range(len(seq) - 1, 0, -1):
            if seq[j] - seq[j - 1] < floor:
                continue
            if j + 1 < len(seq):
                ok = seq[j + 1] - seq[j] >= floor
            else:
                ok = self.lag_s is not None and t - self.lag_s >= seq[j] + self._min
            if ok:
                best = j
                break
        if best:
            self.final += _to_segments(_normalize_bounds(seq[: best + 1], self._min, self._max))
            self._fixed = seq[best]
            self._open = self._open[best:]
        return self.final

    def finish(self, duration: float) -> list[Segment]:
        """All segments of ``[0, duration]``: the final ones, then the rest normalised."""
        duration = _check_duration(duration)
        if duration <= self._fixed + _EPS:
            raise ValueError(
                f"duration {duration} ends before segments already released (up to {self._fixed})"
            )
        rest = [self._fixed, *(c for c in self._open if c < duration - _EPS), duration]
        return self.final + _to_segments(_normalize_bounds(rest, self._min, self._max))


class _SceneRun:
    """Feeds a fresh detector the (downscaled) frames; times are exact microsecond timecodes."""

    _BUFFER = 2  # frames held back to learn the frame rate the detector's timecodes carry

    def __init__(self, detector: Any, width: int, min_seconds: float, max_seconds: float | None):
        self._det = detector
        self._width = width
        self._pending: list[tuple[float, np.ndarray]] = []
        self._rate: Fraction | None = None
        self._cuts = _CutStream(min_seconds, max_seconds, None)
        self._last_tc = None
        self._last_t = -math.inf
        # How far behind the current frame these detectors may still place a cut (in frames); other
        # detectors (fades, user classes) only release segments once a later cut is found.
        self._lag_frames = (
            int(getattr(detector, "event_buffer_length", 0) or 0)
            if isinstance(detector, _bounded_lag_classes())
            else None
        )

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if w <= self._width:
            return frame
        f = w / self._width
        size = (max(1, round(w / f)), max(1, round(h / f)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)  # as SceneManager does

    def _timecode(self, t: float):
        from scenedetect.common import FrameTimecode, Timecode

        return FrameTimecode(
            Timecode(pts=round(t * 1_000_000), time_base=Fraction(1, 1_000_000)), fps=self._rate
        )

    def _process(self, t: float, small: np.ndarray) -> None:
        tc = self._timecode(t)
        self._last_tc = tc
        self._last_t = t
        for cut in self._det.process_frame(tc, small):
            self._cuts.add(float(cut.seconds))

    def _flush(self, rate_hint: float | None = None) -> None:
        if self._rate is None:
            ts = [t for t, _ in self._pending]
            dt = (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else (rate_hint or 0.0)
            fps = 1.0 / dt if dt > 0 else _FALLBACK_FPS
            self._rate = Fraction(fps).limit_denominator(1001)
            if self._lag_frames is not None:
                self._cuts.lag_s = (self._lag_frames + 2) / fps
        for t, small in self._pending:
            self._process(t, small)
        self._pending = []

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        small = self._small(frame_bgr)
        if self._rate is None:
            self._pending.append((float(t), small))
            if len(self._pending) > self._BUFFER:
                self._flush()
            return
        self._process(float(t), small)

    def finish(self, duration: float) -> list[Segment]:
        duration = _check_duration(duration)
        if self._pending:
            last = self._pending[-1][0]
            self._flush(rate_hint=duration - last if duration > last else None)
        if self._last_tc is not None:
            for cut in self._det.post_process(self._last_tc):
                self._cuts.add(float(cut.seconds))
        return self._cuts.finish(duration)

    def final_segments(self, t: float) -> list[Segment]:
        """The segments that can no longer change, given the frames fed so far."""
        return self._cuts.advance(self._last_t) if self._rate is not None else []


class SceneSegmenter:
    """Segments at detected scene cuts (PySceneDetect 0.7 detectors fed from our single decode pass).

    ``detector`` is one of ``"adaptive"`` (default), ``"content"``, ``"histogram"``, ``"hash"``,
    ``"threshold"``, or a PySceneDetect ``SceneDetector`` instance (copied afresh for every video).
    Extra keyword arguments go to the detector and override our defaults (see :data:`DETECTORS`).
    Detected scenes are then normalised: shorter than ``min_seconds`` merge into a neighbour, longer
    than ``max_seconds`` split evenly (``None``: no limit). A video without a cut is one segment.
    Frames wider than ``detection_width`` pixels are downscaled before detection.
    """

    needs_frames = True

    def __init__(
        self,
        detector: str | Any = "adaptive",
        min_seconds: float = 1.0,
        max_seconds: float | None = 20.0,
        detection_width: int = DETECTION_WIDTH,
        **detector_kwargs: Any,
    ):
        if isinstance(detector, str):
            key = detector.lower()
            if key not in DETECTORS:
                raise ValueError(
                    f"unknown scene detector {detector!r}; expected one of {sorted(DETECTORS)} or a "
                    "scenedetect SceneDetector instance"
                )
            cls_name, defaults = DETECTORS[key]
            self._kwargs = {**defaults, **detector_kwargs}
            import scenedetect.detectors as sd

            cls = getattr(sd, cls_name)
            try:
                self._template = cls(**self._kwargs)
            except TypeError as e:
                raise ValueError(f"invalid settings for the {key!r} scene detector: {e}") from e
            self._label = key
        else:
            if detector_kwargs:
                raise ValueError("detector keyword arguments apply only to a detector given by name")
            if not hasattr(detector, "process_frame"):
                raise TypeError(f"not a scene detector (no process_frame method): {detector!r}")
            self._template = detector
            self._kwargs = _detector_settings(detector)
            self._label = type(detector).__name__
        if int(detection_width) < 16:
            raise ValueError(f"detection_width must be at least 16 pixels, got {detection_width!r}")
        self.detection_width = int(detection_width)
        self.min_seconds, self.max_seconds = _check_limits(min_seconds, max_seconds)

    @property
    def name(self) -> str:
        opts = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self._kwargs.items()))
        limits = f"min_seconds={self.min_seconds:g}, max_seconds={_fmt(self.max_seconds)}"
        width = f"width={self.detection_width}"
        return f"scenes({self._label}{', ' + opts if opts else ''}, {limits}, {width})"

    def start(self) -> _SceneRun:
        return _SceneRun(
            copy.deepcopy(self._template), self.detection_width, self.min_seconds, self.max_seconds
        )

    def segment(self, path: str | os.PathLike) -> list[Segment]:
        """Segment a video file (decodes it once)."""
        return run_segmenter(self, path)

    def __repr__(self) -> str:
        return f"SceneSegmenter<{self.name}>"


# --------------------------------------------------------------------------------------------------
# Specs


def _parse_value(s: str) -> Any:
    low = s.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def _parse_options(text: str, spec: str) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs = [], {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            k, v = part.split("=", 1)
            if not k.strip().isidentifier():
                raise ValueError(f"bad option {part!r} in segmenter spec {spec!r}")
            kwargs[k.strip()] = _parse_value(v.strip())
        elif kwargs:
            raise ValueError(f"positional value {part!r} after key=value options in segmenter spec {spec!r}")
        else:
            args.append(_parse_value(part))
    return args, kwargs


def load_segmenter(spec: str | Segmenter) -> Segmenter:
    """A segmenter from an instance or a spec string.

    Specs: ``"fixed"``, ``"fixed:SECONDS"``, ``"scenes"``, ``"scenes:DETECTOR"``, optionally followed by
    comma-separated options (``"scenes:content,threshold=30,max_seconds=15"``, ``"fixed:seconds=5"``),
    or ``"package.module:attr"`` naming a class or factory called with no arguments.
    """
    if not isinstance(spec, str):
        if all(hasattr(spec, a) for a in ("name", "needs_frames", "start")):
            return spec
        raise TypeError(f"not a segmenter (needs name, needs_frames and start()): {spec!r}")
    s = spec.strip()
    head, _, rest = s.partition(":")
    kind = head.strip().lower()
    try:
        if kind == "fixed":
            args, kwargs = _parse_options(rest, spec)
            return FixedSegmenter(*args, **kwargs)
        if kind in ("scenes", "scene"):
            args, kwargs = _parse_options(rest, spec)
            return SceneSegmenter(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"invalid segmenter spec {spec!r}: {e}") from e
    if rest and all(p.isidentifier() for p in head.split(".")):
        try:
            module = importlib.import_module(head)
        except ImportError as e:
            raise ValueError(f"segmenter spec {spec!r}: cannot import module {head!r} ({e})") from e
        try:
            obj = module
            for part in rest.split("."):
                obj = getattr(obj, part)
        except AttributeError as e:
            raise ValueError(f"segmenter spec {spec!r}: module {head!r} has no attribute {rest!r}") from e
        seg = obj() if callable(obj) else obj
        return load_segmenter(seg)
    raise ValueError(
        f"unknown segmenter spec {spec!r}; expected 'fixed', 'fixed:SECONDS', 'scenes', 'scenes:DETECTOR' "
        f"(one of {sorted(DETECTORS)}), or 'package.module:attr'"
    )


__all__ = [
    "DETECTORS",
    "FixedSegmenter",
    "SceneSegmenter",
    "Segment",
    "Segmenter",
    "SegmenterRun",
    "fixed_segments",
    "load_segmenter",
    "normalize_segments",
    "run_segmenter",
]
