"""A small deterministic encoder for tests: frame colours in, colour-name vectors out.

Each sampled frame gives four tokens, the mean colour of its quadrants, expressed as closeness to the
palette of :mod:`maxsim.synthetic`. Each colour word of a query gives one token pointing at that colour;
every other word gives a token on an axis no frame uses, so it adds the same 0 to every segment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from maxsim.testing.synthetic import COLORS
from maxsim.types import Clip, FrameSize

_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[n] for n in _NAMES], dtype=np.float32)


class ColorEncoder:
    name = "test-color"
    dim = len(_NAMES) + 1

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        out = []
        for text in texts:
            rows = []
            for word in re.findall(r"[a-z]+", text.lower()) or ["empty"]:
                v = torch.zeros(self.dim)
                v[_NAMES.index(word) if word in _NAMES else -1] = 1.0
                rows.append(v)
            out.append(torch.stack(rows))
        return out

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        out = []
        for clip in clips:
            rows = []
            for frame in clip.frames:
                h, w = frame.shape[0] // 2, frame.shape[1] // 2
                for quad in (frame[:h, :w], frame[:h, w:], frame[h:, :w], frame[h:, w:]):
                    mean = quad.reshape(-1, 3).mean(0)
                    closeness = np.exp(-np.linalg.norm(_PALETTE - mean, axis=1) / 40.0)
                    rows.append(np.append(closeness, 0.0))
            t = torch.tensor(np.array(rows), dtype=torch.float32)
            out.append(torch.nn.functional.normalize(t, dim=1))
        return out


def make() -> ColorEncoder:
    return ColorEncoder()


class SizedColorEncoder(ColorEncoder):
    """:class:`ColorEncoder` that wants frames of at most 768 pixels (as ColQwen3 sizes them to its token
    budget): frame sampling sized to the encoder, without a model."""

    name = "test-color-sized"

    def frame_size(self, n_frames: int) -> FrameSize:
        return FrameSize(max_pixels=768)
