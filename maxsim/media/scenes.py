"""The ``scenes`` segmenter: cuts found by a PySceneDetect 0.7 detector fed from the single decode pass,
normalised (short scenes merged, long ones split) and released as soon as they are final."""

from __future__ import annotations

import bisect
import copy
import inspect
import logging
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np

from maxsim.media.avframes import pick
from maxsim.media.content import ContentScoreDetector
from maxsim.media.spans import (
    EPS,
    CutScores,
    check_duration,
    check_limits,
    normalize_bounds,
    run_segmenter,
    to_segments,
)
from maxsim.media.video import FALLBACK_FPS
from maxsim.specs import import_attr
from maxsim.types import Segment

logger = logging.getLogger("maxsim.media.scenes")


# Detector name -> (the detector class as "module:Class", our default keyword arguments); min_scene_len is
# given in seconds (a float) so it is frame-rate independent. The default detector ("content",
# PySceneDetect's content score at its own default threshold 27, computed by maxsim.media.content) was
# chosen by `maxsim-bench segment` on the real set (bench/results/segment-cpu-amd-epyc-f25m17-2026-12-03.md,
# re-measured on the ingest's decode pass in segment-cpu-amd-epyc-2026-12-03-ingest-decode.md):
# cut F1 0.94 at 0.25 s against 0.76 for AdaptiveDetector at threshold 3.5 / window 3 (the earlier
# default), which missed fades and a weak cut.
DETECTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "adaptive": ("scenedetect.detectors:AdaptiveDetector",
                 {"adaptive_threshold": 3.5, "window_width": 3, "min_scene_len": 0.6}),
    "content": ("maxsim.media.content:ContentScoreDetector", {"threshold": 27.0, "min_scene_len": 0.6}),
    "histogram": ("scenedetect.detectors:HistogramDetector", {"threshold": 0.2, "min_scene_len": 0.6}),
    "hash": ("scenedetect.detectors:HashDetector", {"threshold": 0.35, "min_scene_len": 0.6}),
    "threshold": ("scenedetect.detectors:ThresholdDetector", {"threshold": 12.0, "min_scene_len": 0.6}),
}


def _bounded_lag_classes() -> tuple[type, ...]:
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector

    return (ContentScoreDetector, AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector)


DETECTION_WIDTH = 256  # frames wider than this are downscaled for detection, as SceneManager does
# Narrower defaults per detector. The content score is a mean change over the frame's pixels, which a
# 32-px grid of nearest pixels estimates as well as a 256-px one: `maxsim-bench segment` found the same
# cuts on the real set at 16 to 256 px (F1 0.94 at 0.25 s each), and Big Buck Bunny's 142 segments at 32
# and 64 px differ only where no shot changes: a boulder landing in one shot (346.33 against 346.50 s) and
# the splits of the scrolling end credits (bench/results/segment-cpu-amd-epyc-avx2-2026-12-04-width32.md;
# 64 against 128 and 256 px: ...-width64.md). The decode pass gathers this copy from every frame, so the
# rows it reads (18 of each plane of a 720p frame at 32 px, 36 at 64) are its main cost.
DETECTION_WIDTHS: dict[str, int] = {"content": 32}


def detection_size(w: int, h: int, width: int = DETECTION_WIDTH) -> tuple[int, int] | None:
    """The size (width, height) a ``w`` x ``h`` frame is scaled to for cut detection (aspect kept, at most
    ``width`` wide); None when it is used as it is."""
    if w <= width:
        return None
    f = w / width
    return max(1, round(w / f)), max(1, round(h / f))


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

    def __init__(self, min_seconds: float, max_seconds: float | None, lag_s: float | None,
                 scores: CutScores | None = None):
        self._min, self._max = check_limits(min_seconds, max_seconds)
        self.lag_s = lag_s
        self.scores = scores  # the detector's per-frame scores: where long scenes are split first
        self._fixed = 0.0  # time up to which segments are final
        self._open: list[float] = []  # sorted cuts after _fixed
        self.final: list[Segment] = []

    def add(self, cut: float) -> None:
        cut = float(cut)
        if not math.isfinite(cut) or cut <= self._fixed + EPS:
            if math.isfinite(cut) and cut > EPS:
                logger.debug(
                    "scene cut at %.3f s arrived after segments up to %.3f s were final", cut, self._fixed
                )
            return
        i = bisect.bisect_left(self._open, cut)
        if (i < len(self._open) and self._open[i] - cut <= EPS) or (
            i > 0 and cut - self._open[i - 1] <= EPS
        ):
            return
        self._open.insert(i, cut)

    def advance(self, t: float) -> list[Segment]:
        """Release what is final once the decoder has reached time ``t``; returns all final segments."""
        seq = [self._fixed, *self._open]
        floor = self._min - EPS
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
            self.final += to_segments(normalize_bounds(seq[: best + 1], self._min, self._max, self.scores))
            self._fixed = seq[best]
            self._open = self._open[best:]
        return self.final

    def finish(self, duration: float) -> list[Segment]:
        """All segments of ``[0, duration]``: the final ones, then the rest normalised."""
        duration = check_duration(duration)
        if duration <= self._fixed + EPS:
            raise ValueError(
                f"duration {duration} ends before segments already released (up to {self._fixed})"
            )
        rest = [self._fixed, *(c for c in self._open if c < duration - EPS), duration]
        return self.final + to_segments(normalize_bounds(rest, self._min, self._max, self.scores))


class _ScoreRecorder:
    """Stands in for a PySceneDetect StatsManager: keeps the one per-frame metric that scores a cut."""

    def __init__(self, key: str, scores: CutScores):
        self.key = key
        self.scores = scores

    def set_metrics(self, timecode: Any, metrics: dict[str, Any]) -> None:
        v = metrics.get(self.key)
        if isinstance(v, (int, float)):
            self.scores.add(float(timecode.seconds), float(v))


def _record_scores(detector: Any) -> CutScores | None:
    """Have ``detector`` report its per-frame cut score (content_val, hist_diff, hash_dist: its first
    metric) to a fresh :class:`CutScores`; None for detectors without one (threshold/fade detectors, user
    classes) or that already report to a stats manager of their own.

    Our content detector hands its scores over directly; PySceneDetect's detectors only through a stats
    manager (with one attached, its ContentDetector and AdaptiveDetector also compute an edge map for
    every frame)."""
    if isinstance(detector, ContentScoreDetector):
        scores = CutScores()
        detector.on_score = scores.add
        return scores
    if not isinstance(detector, _bounded_lag_classes()) or detector.stats_manager is not None:
        return None
    metrics = list(detector.get_metrics() or [])
    if not metrics:
        return None
    scores = CutScores()
    detector.stats_manager = _ScoreRecorder(str(metrics[0]), scores)
    return scores


class _SceneRun:
    """Feeds a fresh detector the (downscaled) frames; times are exact microsecond timecodes."""

    _BUFFER = 2  # frames held back to learn the frame rate the detector's timecodes carry

    def __init__(self, detector: Any, width: int, min_seconds: float, max_seconds: float | None):
        self._det = detector
        self._width = width
        self._pending: list[tuple[float, np.ndarray]] = []
        self._rate: Fraction | None = None
        self._cuts = _CutStream(min_seconds, max_seconds, None, _record_scores(detector))
        self._last_tc = None
        self._last_t = -math.inf
        self._by_seconds = detector.process_seconds if isinstance(detector, ContentScoreDetector) else None
        # How far behind the current frame these detectors may still place a cut (in frames); other
        # detectors (fades, user classes) only release segments once a later cut is found.
        self._lag_frames = (
            int(getattr(detector, "event_buffer_length", 0) or 0)
            if isinstance(detector, _bounded_lag_classes())
            else None
        )

    def _size(self, w: int, h: int) -> tuple[int, int] | None:
        return detection_size(w, h, self._width)

    def _small(self, frame: np.ndarray) -> np.ndarray:
        size = self._size(frame.shape[1], frame.shape[0])
        return frame if size is None else pick(frame, size)

    def _timecode(self, t: float):
        from scenedetect.common import FrameTimecode, Timecode

        return FrameTimecode(
            Timecode(pts=round(t * 1_000_000), time_base=Fraction(1, 1_000_000)), fps=self._rate
        )

    def _process(self, t: float, small: np.ndarray) -> None:
        self._last_t = t
        if self._by_seconds is not None:  # maxsim's detectors take and give seconds: no timecode objects
            for cut in self._by_seconds(t, small):
                self._cuts.add(cut)
            return
        tc = self._timecode(t)
        self._last_tc = tc
        for cut in self._det.process_frame(tc, small):
            self._cuts.add(float(cut.seconds))

    def _flush(self, rate_hint: float | None = None) -> None:
        if self._rate is None:
            ts = [t for t, _ in self._pending]
            dt = (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else (rate_hint or 0.0)
            fps = 1.0 / dt if dt > 0 else FALLBACK_FPS
            self._rate = Fraction(fps).limit_denominator(1001)
            if self._lag_frames is not None:
                self._cuts.lag_s = (self._lag_frames + 2) / fps
        for t, small in self._pending:
            self._process(t, small)
        self._pending = []

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        self._take(t, self._small(frame_bgr))

    def feed_decoded(self, t: float, frame: Any) -> None:
        """Feed a :class:`~maxsim.media.avframes.DecodedFrame`: the detection-size copy is picked from the
        decoded planes, without a full-size BGR image."""
        size = self._size(frame.width, frame.height)
        self._take(t, frame.bgr() if size is None else frame.bgr_scaled(*size))

    def _take(self, t: float, small: np.ndarray) -> None:
        if self._rate is None:
            self._pending.append((float(t), small))
            if len(self._pending) > self._BUFFER:
                self._flush()
            return
        self._process(float(t), small)

    def finish(self, duration: float) -> list[Segment]:
        duration = check_duration(duration)
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

    ``detector`` is one of ``"content"`` (default), ``"adaptive"``, ``"histogram"``, ``"hash"``,
    ``"threshold"``, or a PySceneDetect ``SceneDetector`` instance (copied afresh for every video).
    Extra keyword arguments go to the detector and override our defaults (see :data:`DETECTORS`).
    Detected scenes are then normalised: shorter than ``min_seconds`` merge into a neighbour, longer
    than ``max_seconds`` split (``None``: no limit) at the strongest cut candidates inside them (the
    detector's per-frame score peaking on a change too weak to count as a cut), evenly where none is.
    A video without a cut is one segment.
    Frames wider than ``detection_width`` pixels are downscaled before detection (default: 32 for
    ``"content"``, 256 otherwise, see :data:`DETECTION_WIDTHS`).
    """

    needs_frames = True

    def __init__(
        self,
        detector: str | Any = "content",
        min_seconds: float = 1.0,
        max_seconds: float | None = 20.0,
        detection_width: int | None = None,
        **detector_kwargs: Any,
    ):
        if isinstance(detector, str):
            key = detector.lower()
            if key not in DETECTORS:
                raise ValueError(
                    f"unknown scene detector {detector!r}; expected one of {sorted(DETECTORS)} or a "
                    "scenedetect SceneDetector instance"
                )
            cls_path, defaults = DETECTORS[key]
            self._kwargs = {**defaults, **detector_kwargs}
            cls = import_attr(cls_path, f"scene detector {key!r}")
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
        if detection_width is None:
            detection_width = DETECTION_WIDTHS.get(self._label, DETECTION_WIDTH)
        if int(detection_width) < 16:
            raise ValueError(f"detection_width must be at least 16 pixels, got {detection_width!r}")
        self.detection_width = int(detection_width)
        self.min_seconds, self.max_seconds = check_limits(min_seconds, max_seconds)

    @property
    def name(self) -> str:
        opts = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self._kwargs.items()))
        limits = f"min_seconds={self.min_seconds:g}, max_seconds={_fmt(self.max_seconds)}"
        width = f"width={self.detection_width}"
        return f"scenes({self._label}{', ' + opts if opts else ''}, {limits}, {width})"

    def detection_size(self, w: int, h: int) -> tuple[int, int] | None:
        """The size a ``w`` x ``h`` frame is scaled to before detection; None: used as it is."""
        return detection_size(w, h, self.detection_width)

    def start(self) -> _SceneRun:
        return _SceneRun(
            copy.deepcopy(self._template), self.detection_width, self.min_seconds, self.max_seconds
        )

    def segment(self, path: str | os.PathLike) -> list[Segment]:
        """Segment a video file (decodes it once)."""
        return run_segmenter(self, path)

    def __repr__(self) -> str:
        return f"SceneSegmenter<{self.name}>"
