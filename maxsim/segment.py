"""Cutting a video's timeline into segments: fixed spans or detected scenes (PySceneDetect), normalised to
cover ``[0, duration]`` exactly with bounded segment lengths.

A :class:`Segmenter` is a recipe (its ``name`` records the settings in the index); ``start()`` gives a
per-video run that is fed the frames of the single decode pass and returns the segments at ``finish``.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
from collections.abc import Iterable
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from maxsim.types import Segment
from maxsim.video import iter_frames

_EPS = 1e-9


# --------------------------------------------------------------------------------------------------
# Contracts


@runtime_checkable
class SegmenterRun(Protocol):
    """Segmentation state of one video: fed every decoded frame in time order, then finished."""

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
    feed = segmenter.needs_frames
    duration = 0.0
    prev_t = None
    dt = 0.0
    for t, frame in iter_frames(path):
        if feed:
            run.feed(t, frame)
        if prev_t is not None:
            dt = t - prev_t
        prev_t = t
    if prev_t is not None:
        duration = prev_t + (dt if dt > 0 else _frame_interval_fallback(path))
    return run.finish(duration)


def _frame_interval_fallback(path: str | os.PathLike) -> float:
    from maxsim.video import probe

    fps = probe(path).fps
    return 1.0 / fps if fps > 0 else 1.0 / 25.0


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

    if min_seconds > 0 and len(bounds) > 2:
        bounds = _merge_short(bounds, min_seconds)
    if max_seconds is not None:
        bounds = _split_long(bounds, max_seconds)
    return [Segment(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _merge_short(bounds: list[float], min_seconds: float) -> list[float]:
    lengths = np.diff(np.asarray(bounds, dtype=np.float64))
    alive = list(bounds)
    lengths = list(lengths)
    while len(lengths) > 1:
        i = int(np.argmin(lengths))
        if lengths[i] >= min_seconds - _EPS:
            break
        if i == 0:
            j = 1
        elif i == len(lengths) - 1:
            j = i - 1
        else:
            j = i - 1 if lengths[i - 1] <= lengths[i + 1] else i + 1
        lo = min(i, j)  # merge segments lo and lo + 1: remove the boundary between them
        del alive[lo + 1]
        lengths[lo] = alive[lo + 1] - alive[lo]
        del lengths[lo + 1]
    return alive


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

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        pass

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

DETECTION_WIDTH = 256  # frames wider than this are downscaled for detection, as SceneManager does


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if hasattr(v, "name") and hasattr(v, "value"):  # enums
        return str(v.name)
    return repr(v) if isinstance(v, str) else str(v)


def _detector_settings(det: Any) -> dict[str, Any]:
    """Public scalar attributes of a detector instance (for its recorded name)."""
    out = {}
    for k, v in sorted(vars(det).items()):
        k = k.lstrip("_")
        if k in out or k.startswith(("last", "buffer", "frame", "stats", "flash", "merge")):
            continue
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
    return out


class _SceneRun:
    """Feeds a fresh detector the (downscaled) frames; times are exact microsecond timecodes."""

    _BUFFER = 2  # frames held back to learn the frame rate the detector's timecodes carry

    def __init__(self, detector: Any, width: int, min_seconds: float, max_seconds: float | None):
        self._det = detector
        self._width = width
        self._min = min_seconds
        self._max = max_seconds
        self._pending: list[tuple[float, np.ndarray]] = []
        self._rate: Fraction | None = None
        self._cuts: list[float] = []
        self._last_tc = None

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if w <= self._width:
            return frame
        f = w / self._width
        size = (max(1, round(w / f)), max(1, round(h / f)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    def _timecode(self, t: float):
        from scenedetect.common import FrameTimecode, Timecode

        return FrameTimecode(
            Timecode(pts=round(t * 1_000_000), time_base=Fraction(1, 1_000_000)), fps=self._rate
        )

    def _process(self, t: float, small: np.ndarray) -> None:
        tc = self._timecode(t)
        self._last_tc = tc
        for cut in self._det.process_frame(tc, small):
            self._cuts.append(float(cut.seconds))

    def _flush(self, rate_hint: float | None = None) -> None:
        if self._rate is None:
            ts = [t for t, _ in self._pending]
            dt = (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else (rate_hint or 0.0)
            fps = 1.0 / dt if dt > 0 else 25.0
            self._rate = Fraction(fps).limit_denominator(1001)
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
                self._cuts.append(float(cut.seconds))
        return normalize_segments(self._cuts, duration, self._min, self._max)


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
        self.min_seconds = float(min_seconds)
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        normalize_segments([], 1.0, self.min_seconds, self.max_seconds)  # validates the limits early

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
