"""A deterministic reranker for tests: the share of a clip's pixels near the query's colours, averaged over
its frames (where MaxSim with the colour encoder takes the single best frame)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maxsim.testing.color import PALETTE, ColorHistogramEncoder
from maxsim.types import Clip, FrameSize


class ColourJudge:
    """``score(query, clips)``: mean over frames of the fraction of pixels of the query's colour words.
    Keeps every call's clips in ``seen``; wants frames of at most ``max_pixels`` pixels."""

    name = "test-colour-judge"

    def __init__(self, max_pixels: int = 32 * 32):
        self.max_pixels = max_pixels
        self.hist = ColorHistogramEncoder()
        self.seen: list[tuple[str, list[Clip]]] = []

    def frame_size(self, n_frames: int) -> FrameSize:
        return FrameSize(max_pixels=self.max_pixels)

    def score(self, query: str, clips: Sequence[Clip]) -> list[float]:
        self.seen.append((query, list(clips)))
        names = list(PALETTE)  # the histogram bins' order
        wanted = [names.index(w) for w in self.hist.colour_words(query)]
        out = []
        for clip in clips:
            per_frame = [self.hist.describe_frame(f)[0, wanted].sum() for f in clip.frames]
            out.append(float(np.mean(per_frame)) if wanted else 0.0)
        return out


class WrongCount(ColourJudge):
    """A broken reranker: one score too few."""

    def score(self, query: str, clips: Sequence[Clip]) -> list[float]:
        return super().score(query, clips)[:-1]
