"""A deterministic colour encoder for tests, demos and the synthetic benchmark: NOT a model.

It has no weights and understands nothing but colour words. A clip becomes one token per frame (or per
grid cell of a frame): the frame's coarse colour histogram over a fixed palette, as a unit vector. A text
becomes one token per colour word it contains. Both live in the same space, so "a red scene" scores highest
on red frames. It exists so that the whole pipeline (segmentation, sampling, store, MaxSim, evaluation) can
be run end to end and checked on synthetic colour-scene videos (:mod:`maxsim.testing.synthetic`) on any
machine.

Registered as ``"color-test"``: ``load_encoder("color-test")`` or ``--encoder color-test``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from maxsim.testing.synthetic import COLORS
from maxsim.types import Clip, TokenGrid

# The palette: the synthetic module's named colours plus a few more, at least ~80 RGB units apart.
PALETTE: dict[str, tuple[int, int, int]] = {
    **COLORS,
    "pink": (250, 170, 200),
    "grey": (128, 128, 128),
    "navy": (20, 25, 110),
    "olive": (120, 120, 20),
    "teal": (20, 120, 120),
    "maroon": (120, 15, 30),
    "lime": (160, 250, 90),
}
ALIASES = {"gray": "grey", "violet": "purple", "aqua": "cyan", "fuchsia": "magenta"}
_WORD = re.compile(r"[a-z]+")


class ColorHistogramEncoder:
    """Test/demo encoder mapping frames and colour words into one space (see the module docstring).

    ``dim`` is the output dimension (at least the palette size + 1); the palette bins plus an "other" bin
    (pixels farther than ``max_distance`` RGB units from every palette colour) are laid out on fixed
    orthonormal directions, so tokens are dense unit vectors and dot products equal histogram overlaps.
    ``grid`` splits each frame into ``grid x grid`` cells with one token each (frame order, then row-major).
    """

    name = "color-test"

    def __init__(self, dim: int = 32, grid: int = 1, max_distance: float = 60.0, cell_pixels: int = 16):
        n_bins = len(PALETTE) + 1
        if dim < n_bins:
            raise ValueError(f"ColorHistogramEncoder needs dim >= {n_bins} (palette + other), got {dim}")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.dim = int(dim)
        self.grid = int(grid)
        self.max_distance = float(max_distance)
        self.cell_pixels = int(cell_pixels)
        self._names = list(PALETTE)
        self._rgb = np.array([PALETTE[n] for n in self._names], dtype=np.float32)
        # Fixed orthonormal directions: QR of a seeded Gaussian, signs pinned so the basis is reproducible.
        g = np.random.default_rng(20261122).standard_normal((self.dim, n_bins))
        q, r = np.linalg.qr(g)
        self._basis = (q * np.sign(np.diag(r))).T.astype(np.float32)  # (n_bins, dim), rows orthonormal

    def describe_frame(self, frame: np.ndarray) -> np.ndarray:
        """Colour histograms (grid*grid, n_bins) of one RGB frame, one row per cell, rows summing to 1."""
        g, c = self.grid, self.cell_pixels
        small = cv2.resize(frame, (g * c, g * c), interpolation=cv2.INTER_AREA).astype(np.float32)
        px = small.reshape(g, c, g, c, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, c * c, 3)
        dist = np.linalg.norm(px[:, :, None, :] - self._rgb[None, None], axis=-1)  # (cells, pixels, colours)
        nearest = dist.argmin(-1)
        nearest[dist.min(-1) > self.max_distance] = len(self._names)  # "other"
        hist = np.stack([np.bincount(row, minlength=len(self._names) + 1) for row in nearest]).astype(
            np.float32
        )
        return hist / hist.sum(1, keepdims=True)

    def _embed(self, hist: np.ndarray) -> torch.Tensor:
        v = hist @ self._basis
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        """One token per frame cell, in frame order."""
        out = []
        for clip in clips:
            frames = np.asarray(clip.frames)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise ValueError(f"clip of {clip.video}: frames must be (n, H, W, 3) RGB, got {frames.shape}")
            if len(frames) == 0:
                out.append(torch.zeros((0, self.dim), dtype=torch.float32))
                continue
            out.append(self._embed(np.concatenate([self.describe_frame(f) for f in frames])))
        return out

    def token_grid(self, clip: Clip, n_tokens: int) -> TokenGrid:
        """Its tokens lie on a ``grid`` x ``grid`` grid of each frame, frame after frame."""
        return TokenGrid(1, self.grid, self.grid)

    def token_labels(self, text: str) -> list[str]:
        """The colour word behind each query token (``"other"`` for a text naming no colour)."""
        return self.colour_words(text) or ["other"]

    def colour_words(self, text: str) -> list[str]:
        """The palette colours a text names, in order (aliases resolved, repeats kept)."""
        words = (ALIASES.get(w, w) for w in _WORD.findall(text.lower()))
        return [w for w in words if w in PALETTE]

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One token per colour word; a text naming no colour gets one token on the "other" direction."""
        out = []
        for text in texts:
            idx = [self._names.index(w) for w in self.colour_words(text)] or [len(self._names)]
            hist = np.zeros((len(idx), len(self._names) + 1), dtype=np.float32)
            hist[np.arange(len(idx)), idx] = 1.0
            out.append(self._embed(hist))
        return out
