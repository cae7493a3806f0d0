"""The ``content`` scene detector: PySceneDetect's content score, computed in whole-image OpenCV steps and
handed to its caller frame by frame.

The score is PySceneDetect's (``ContentDetector``): the mean absolute change of hue, saturation and value
between consecutive frames (and optionally of an edge map), weighted, a cut where it reaches ``threshold``,
cuts closer than ``min_scene_len`` merged by PySceneDetect's own ``FlashFilter``. Same settings, same
scores, same cuts (tests compare both on generated videos), with two differences that matter in the single
decode pass, where the detector sees every frame of every video:

- Each frame's score goes to ``on_score(seconds, score)``: the segmenter splits long scenes at the
  strongest of these. ``ContentDetector`` only reports scores to an attached stats manager, and with one
  attached it computes its edge map for every frame even when the edges weigh nothing (about 1 ms a
  frame at 256 px, as much as decoding a 720p frame).
- The frame differences are one ``absdiff`` and one ``sumElems`` over the three HSV channels (about 0.01
  ms at 256 px, against about 0.1 ms for three NumPy passes widening to int32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detector import FlashFilter, SceneDetector
from scenedetect.detectors import ContentDetector

Weights = ContentDetector.Components  # (delta_hue, delta_sat, delta_lum, delta_edges)


def edge_kernel_side(width: int, height: int) -> int:
    """The odd side of the square that widens edges, growing with the frame's size (PySceneDetect's
    rule, so that scores with edges match its detector)."""
    side = 4 + round(math.sqrt(width * height) / 192)
    return side + 1 if side % 2 == 0 else side


class MinLengthFilter:
    """Cuts kept at least ``length`` apart, as PySceneDetect's ``FlashFilter`` keeps them (MERGE: a run of
    cuts closer than that becomes one cut at the last of them once the run ends; SUPPRESS: cuts within
    that length of the last one are dropped), on frame times in whole microseconds and frame indices
    instead of timecode objects: what the filter costs per frame matters when it sees every frame.

    ``length``: seconds (float, or a string PySceneDetect reads such as ``"0.6s"``) or frames (int).
    """

    def __init__(self, mode: FlashFilter.Mode, length: int | float | str):
        self.mode = mode
        self._frames: int | None = None
        self._us: int | None = None
        if isinstance(length, (int, np.integer)) or (isinstance(length, str) and length.strip().isdigit()):
            self._frames = int(length)
        else:
            secs = float(length) if isinstance(length, float) else float(getattr(length, "seconds", math.nan))
            if isinstance(length, str):
                secs = FrameTimecode(timecode=length, fps=100.0).seconds
            if not math.isfinite(secs):
                raise ValueError(f"min_scene_len must be frames (int) or seconds, got {length!r}")
            # the smallest whole number of microseconds that is at least `secs`, compared exactly
            self._us = math.ceil(Fraction(secs) * 1_000_000)
        self._last: tuple[int, int, Any] | None = None  # (microseconds, frame index, token) last above
        self._start: tuple[int, int, Any] | None = None  # where the current merge run began
        self._enabled = False  # merging starts after the first cut
        self._merging = False

    @property
    def max_behind(self) -> int:
        """Frames behind the newest at which a cut may be placed (at 240 fps for a length in seconds)."""
        if self.mode == FlashFilter.Mode.SUPPRESS:
            return 0
        return self._frames if self._frames is not None else math.ceil(self._us / 1e6 * 240.0)

    def _apart(self, a: tuple[int, int, Any], b: tuple[int, int, Any]) -> bool:
        if self._frames is not None:
            return b[1] - a[1] >= self._frames
        return b[0] - a[0] >= self._us

    def filter(self, us: int, index: int, token: Any, above: bool) -> list[Any]:
        """Frame ``index`` at ``us`` microseconds scored ``above`` the threshold or not: the tokens of the
        cuts released now."""
        if (self._frames if self._frames is not None else self._us) <= 0:
            return [token] if above else []
        now = (us, index, token)
        if self._last is None:
            self._last = now
        met = self._apart(self._last, now)
        if self.mode == FlashFilter.Mode.SUPPRESS:
            if not (above and met):
                return []
            self._last = now
            return [token]
        if above:
            self._last = now
        if self._merging:
            if met and not above and self._apart(self._start, self._last):
                self._merging = False
                return [self._last[2]]
            return []
        if not above:
            return []
        if met:
            self._enabled = True
            return [token]
        if self._enabled:
            self._merging, self._start = True, now
        return []


class ContentScoreDetector(SceneDetector):
    """Cuts where the weighted mean HSV change between consecutive frames reaches ``threshold``.

    Arguments are those of PySceneDetect's ``ContentDetector`` (``min_scene_len`` in frames when an int, in
    seconds when a float). ``on_score``, when set, is called with the time (seconds) and score of every
    frame after the first.
    """

    def __init__(
        self,
        threshold: float = 27.0,
        min_scene_len: int | float | str = 15,
        weights: Weights = ContentDetector.DEFAULT_COMPONENT_WEIGHTS,
        luma_only: bool = False,
        kernel_size: int | None = None,
        filter_mode: FlashFilter.Mode = FlashFilter.Mode.MERGE,
    ):
        super().__init__()
        self.threshold = float(threshold)
        self.min_scene_len = min_scene_len
        self.weights = ContentDetector.LUMA_ONLY_WEIGHTS if luma_only else Weights(*weights)
        if not any(self.weights):
            raise ValueError(f"content detector weights are all zero: {tuple(self.weights)!r}")
        self.luma_only = bool(luma_only)
        if kernel_size is not None and (int(kernel_size) < 3 or int(kernel_size) % 2 == 0):
            raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
        self.kernel_size = None if kernel_size is None else int(kernel_size)
        self.filter_mode = filter_mode
        self.on_score: Callable[[float, float], None] | None = None
        self.last_score: float | None = None
        self._parts: tuple[float, float, float, float] | None = None  # see last_parts
        self._flash = MinLengthFilter(filter_mode, min_scene_len)
        self._index = 0
        self._norm = float(sum(abs(w) for w in self.weights))
        self._edges = self.weights.delta_edges > 0.0
        self._prev: np.ndarray | None = None
        self._prev_edges: np.ndarray | None = None
        self._kernel: np.ndarray | None = None

    @property
    def last_parts(self) -> Weights | None:
        """The last score's components (mean change of hue, saturation, value and edges), None before."""
        return None if self._parts is None else Weights(*self._parts)

    def get_metrics(self) -> list[str]:
        return list(ContentDetector.METRIC_KEYS)

    @property
    def event_buffer_length(self) -> int:
        """Frames behind the newest one at which a cut may still be placed (the flash filter's merge)."""
        return self._flash.max_behind

    def _edge_map(self, lum: np.ndarray) -> np.ndarray:
        if self._kernel is None:
            side = self.kernel_size or edge_kernel_side(lum.shape[1], lum.shape[0])
            self._kernel = np.ones((side, side), np.uint8)
        median = float(np.median(lum))
        low = int(max(0.0, (1.0 - 1.0 / 3.0) * median))
        high = int(min(255.0, (1.0 + 1.0 / 3.0) * median))
        return cv2.dilate(cv2.Canny(lum, low, high), self._kernel)

    def frame_score(self, frame_bgr: np.ndarray) -> float | None:
        """The score of ``frame_bgr`` against the previous frame given here; None for the first frame
        (and after a change of frame size, which starts the comparison afresh)."""
        hsv = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2HSV)
        edges = self._edge_map(hsv[:, :, 2]) if self._edges else None
        prev, prev_edges = self._prev, self._prev_edges
        self._prev, self._prev_edges = hsv, edges
        if prev is None or prev.shape != hsv.shape:
            return None
        n = float(hsv.shape[0] * hsv.shape[1])
        dh, ds, dv, _ = cv2.sumElems(cv2.absdiff(hsv, prev))
        de = 0.0 if edges is None or prev_edges is None else cv2.sumElems(cv2.absdiff(edges, prev_edges))[0]
        parts = self._parts = (dh / n, ds / n, dv / n, de / n)
        w = self.weights  # the weighted sum in PySceneDetect's order, as a plain expression (every frame)
        return (parts[0] * w[0] + parts[1] * w[1] + parts[2] * w[2] + parts[3] * w[3]) / self._norm

    def process_frame(self, timecode: Any, frame_img: np.ndarray) -> list[Any]:
        """Score one frame (frames in time order) and return the cuts released now (PySceneDetect's
        detector interface: timecodes in, timecodes out)."""
        return self._step(float(timecode.seconds), frame_img, timecode)

    def process_seconds(self, t: float, frame_img: np.ndarray) -> list[float]:
        """:meth:`process_frame` with the frame's time in seconds, and the cuts' times returned."""
        return self._step(float(t), frame_img, None)

    def _step(self, t: float, frame_img: np.ndarray, timecode: Any) -> list[Any]:
        score = self.frame_score(frame_img)
        self.last_score = score
        if score is None:
            score = 0.0
        else:
            if self.on_score is not None:
                self.on_score(t, score)
            if self.stats_manager is not None and timecode is not None:
                keys = ContentDetector.METRIC_KEYS  # the score's key, then one per component
                metrics = dict(zip(keys, (score, *self.last_parts), strict=True))
                self.stats_manager.set_metrics(timecode, metrics)
        self._index += 1
        token = t if timecode is None else timecode
        return self._flash.filter(round(t * 1_000_000), self._index, token, score >= self.threshold)


__all__ = ["ContentScoreDetector", "MinLengthFilter", "Weights", "edge_kernel_side"]
