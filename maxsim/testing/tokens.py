"""Synthetic multi-vector corpora with the structure of encoded video, for tests and benchmarks.

Not noise: tokens cluster around a vocabulary of "concepts" (unit vectors); each video draws its segments'
concepts mostly from its own small theme, so segments of one video resemble each other; inside a segment
most tokens of a frame repeat the previous frame's token with a small drift (a static background), the
rest are drawn afresh. Queries are made from a target segment: some tokens are noisy copies of the
target's tokens, the rest come from a small set of "function word" directions shared by all queries.

Generation is deterministic per block of segments (seeded by the spec's seed and the block number), so a
corpus of a million segments can be streamed to disk block by block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CorpusSpec:
    """Shape and structure of a synthetic corpus."""

    n_segments: int
    frames: int = 4  # frames per segment
    tokens_per_frame: int = 8
    dim: int = 128
    n_concepts: int = 4096
    segments_per_video: int = 60
    theme: int = 24  # concepts per video
    concepts_per_segment: int = 6
    off_theme: float = 0.25  # share of a segment's concepts drawn from the whole vocabulary
    token_noise: float = 0.8  # norm of the noise added to a concept (cosine to it ~ 1/sqrt(1+noise^2))
    static: float = 0.7  # share of a frame's tokens that repeat the previous frame's token
    drift: float = 0.12  # norm of the change of a repeated token
    seed: int = 0

    @property
    def tokens_per_segment(self) -> int:
        return self.frames * self.tokens_per_frame

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class SyntheticCorpus:
    """A corpus described by a :class:`CorpusSpec`: stream its segments, make queries for targets."""

    def __init__(self, spec: CorpusSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        self.concepts = _unit(rng.standard_normal((spec.n_concepts, spec.dim))).astype(np.float32)
        self.function_words = _unit(rng.standard_normal((16, spec.dim))).astype(np.float32)

    def _noise(self, rng: np.random.Generator, shape: tuple[int, ...], norm: float) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * (norm / np.sqrt(self.spec.dim))

    def block(self, first: int, n: int) -> torch.Tensor:
        """Tokens of segments ``first .. first + n - 1``: float32 ``(n, tokens_per_segment, dim)``.

        ``first`` must be a multiple of ``segments_per_video`` or 0 so that videos are whole.
        """
        s = self.spec
        rng = np.random.default_rng([s.seed, 1, first])
        n_videos = -(-n // s.segments_per_video)
        themes = rng.integers(0, s.n_concepts, (n_videos, s.theme))
        video = np.arange(n) // s.segments_per_video
        pick = rng.integers(0, s.theme, (n, s.concepts_per_segment))
        seg_concepts = themes[video[:, None], pick]
        off = rng.random((n, s.concepts_per_segment)) < s.off_theme
        seg_concepts[off] = rng.integers(0, s.n_concepts, int(off.sum()))
        t = s.tokens_per_frame
        out = np.empty((n, s.frames, t, s.dim), dtype=np.float32)
        which = seg_concepts[np.arange(n)[:, None], rng.integers(0, s.concepts_per_segment, (n, t))]
        out[:, 0] = _unit(self.concepts[which] + self._noise(rng, (n, t, s.dim), s.token_noise))
        for f in range(1, s.frames):
            fresh_c = seg_concepts[np.arange(n)[:, None], rng.integers(0, s.concepts_per_segment, (n, t))]
            fresh = _unit(self.concepts[fresh_c] + self._noise(rng, (n, t, s.dim), s.token_noise))
            moved = _unit(out[:, f - 1] + self._noise(rng, (n, t, s.dim), s.drift))
            keep = (rng.random((n, t)) < s.static)[..., None]
            out[:, f] = np.where(keep, moved, fresh)
        return torch.from_numpy(out.reshape(n, s.frames * t, s.dim))

    def blocks(self, block: int = 8192, start: int = 0, stop: int | None = None
               ) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first segment, tokens (n, tokens_per_segment, dim))`` blocks covering segments
        ``start .. stop - 1`` (the whole corpus by default); each block is seeded by its first segment, so
        the same blocking gives the same tokens."""
        s = self.spec
        stop = s.n_segments if stop is None else min(stop, s.n_segments)
        if start % s.segments_per_video:
            raise ValueError(f"start {start} must be a multiple of segments_per_video {s.segments_per_video}")
        block = max(s.segments_per_video, block - block % s.segments_per_video)
        for first in range(start, stop, block):
            yield first, self.block(first, min(block, stop - first))

    def query(self, target_tokens: torch.Tensor, n_tokens: int = 32, n_match: int = 12, noise: float = 0.7,
              seed: int = 0) -> torch.Tensor:
        """A query ``(n_tokens, dim)`` for a target segment: ``n_match`` noisy copies of its tokens, the
        rest function-word tokens."""
        rng = np.random.default_rng([self.spec.seed, 2, seed])
        tt = target_tokens.float().numpy()
        m = min(n_match, n_tokens)
        match = _unit(tt[rng.integers(0, tt.shape[0], m)] + self._noise(rng, (m, self.spec.dim), noise))
        fw = self.function_words[rng.integers(0, len(self.function_words), n_tokens - m)]
        fill = _unit(fw + self._noise(rng, (n_tokens - m, self.spec.dim), 0.5))
        return torch.from_numpy(np.concatenate([match, fill]).astype(np.float32))
