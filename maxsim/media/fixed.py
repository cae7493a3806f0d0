"""The ``fixed`` segmenter: spans of ``seconds`` each, known without looking at a frame."""

from __future__ import annotations

import math
import os

import numpy as np

from maxsim.media.spans import check_count, check_seconds, fixed_segments, run_segmenter
from maxsim.types import Segment


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
        check_count(n, t)
        for k in range(len(self._final), n):
            self._final.append(Segment(k * self._seconds, (k + 1) * self._seconds))
        return self._final

    def finish(self, duration: float) -> list[Segment]:
        return fixed_segments(duration, self._seconds)


class FixedSegmenter:
    """Fixed-length segments of ``seconds`` each (at least :data:`~maxsim.media.spans.MIN_SEGMENT_SECONDS`);
    the last one is shorter. Needs no frames."""

    needs_frames = False

    def __init__(self, seconds: float = 10.0):
        self.seconds = check_seconds(seconds, "FixedSegmenter: seconds")

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
