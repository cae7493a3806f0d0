"""Synthetic multi-vector corpora with the shape of a video index, for timing search without a model.

Segments are ragged: each has a token count drawn uniformly from ``[min_tokens, max_tokens]``. Tokens are
clustered like real embeddings: the space has ``n_clusters`` random unit centroids, each segment draws a
few of them (its "content") and every token is one of its segment's centroids plus Gaussian noise,
L2-normalised. Queries are built the same way around a random target segment's centroids (plus a few
tokens from unrelated clusters, like the filler words of a text query), so every query has segments it
matches well and the top-k is not decided by noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from maxsim.kernels import quantize


@dataclass
class Corpus:
    """A flat token matrix with CSR offsets, as a store hands it to the scorer."""

    tokens: torch.Tensor  # (total_tokens, dim), storage dtype
    offsets: torch.Tensor  # (n_segments + 1,) int64, on the tokens' device
    scale: torch.Tensor | None  # (total_tokens,) float32 per-token scale for int8 / fp8 storage
    clusters: torch.Tensor  # (n_segments, clusters_per_segment) int64, the content of each segment
    centroids: torch.Tensor  # (n_clusters, dim) float32

    @property
    def n_segments(self) -> int:
        return self.offsets.numel() - 1

    def prefix(self, n: int) -> Corpus:
        """The first ``n`` segments (views, no copy): how a growing index is timed from one corpus."""
        end = int(self.offsets[n])
        return Corpus(
            self.tokens[:end],
            self.offsets[: n + 1],
            None if self.scale is None else self.scale[:end],
            self.clusters[:n],
            self.centroids,
        )

    def nbytes(self) -> int:
        """Bytes the scorer reads per pass: tokens, scales and offsets."""
        n = self.tokens.numel() * self.tokens.element_size() + self.offsets.numel() * 8
        return n + (0 if self.scale is None else self.scale.numel() * 4)


# Storage dtype names of the configs -> maxsim.kernels.quantize's names.
QUANTIZE_NAMES = {
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "int8": "int8",
    "float8_e4m3fn": "fp8",
}
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "float8_e4m3fn": getattr(torch, "float8_e4m3fn", None),
}


def storage_dtype(name: str) -> torch.dtype:
    """The torch dtype of a storage name (float32, float16, bfloat16, int8, float8_e4m3fn)."""
    dt = DTYPES.get(name)
    if dt is None:
        raise ValueError(f"unknown storage dtype {name!r}; expected one of {', '.join(DTYPES)}")
    return dt


def _noisy(centroids: torch.Tensor, ids: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    dim = centroids.shape[1]
    x = centroids[ids] + noise / dim**0.5 * torch.randn(
        (ids.numel(), dim), generator=gen, device=centroids.device
    )
    return torch.nn.functional.normalize(x, dim=1)


def make_corpus(
    n_segments: int,
    tokens: tuple[int, int] = (32, 128),
    dim: int = 128,
    n_clusters: int = 1024,
    clusters_per_segment: int = 4,
    noise: float = 0.5,
    dtype: str = "float16",
    device: str | torch.device = "cpu",
    seed: int = 0,
    chunk_tokens: int = 1 << 22,
    progress=None,
) -> Corpus:
    """A corpus of ``n_segments`` segments (see the module docstring), generated on ``device`` in chunks.

    ``progress`` is called with the number of segments generated after every chunk.
    """
    lo, hi = int(tokens[0]), int(tokens[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"token range must satisfy 1 <= low <= high, got {tokens}")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    sdt = storage_dtype(dtype)
    centroids = torch.nn.functional.normalize(
        torch.randn((n_clusters, dim), generator=gen, device=device), dim=1
    )
    counts = torch.randint(lo, hi + 1, (n_segments,), generator=gen, device=device)
    offsets = torch.zeros(n_segments + 1, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(counts, 0)
    total = int(offsets[-1])
    clusters = torch.randint(0, n_clusters, (n_segments, clusters_per_segment), generator=gen, device=device)
    out = torch.empty((total, dim), dtype=sdt, device=device)
    scale = torch.empty(total, dtype=torch.float32, device=device) if sdt.itemsize == 1 else None
    seg_per_chunk = max(1, chunk_tokens // max(1, (lo + hi) // 2))
    for a in range(0, n_segments, seg_per_chunk):
        b = min(n_segments, a + seg_per_chunk)
        lo_row, hi_row = int(offsets[a]), int(offsets[b])
        seg = torch.repeat_interleave(torch.arange(a, b, device=device), counts[a:b])
        pick = torch.randint(0, clusters_per_segment, (seg.numel(),), generator=gen, device=device)
        rows = _noisy(centroids, clusters[seg, pick], noise, gen)
        q, s = quantize(rows, QUANTIZE_NAMES[dtype], per="token")
        out[lo_row:hi_row] = q
        if scale is not None:
            scale[lo_row:hi_row] = s
        if progress is not None:
            progress(b - a)
    return Corpus(out, offsets, scale, clusters, centroids)


def make_queries(
    corpus: Corpus,
    n_queries: int,
    q_tokens: int = 32,
    noise: float = 0.5,
    filler: float = 0.25,
    seed: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, q_offsets, targets)``: float32 queries on the corpus' device aimed at random segments.

    A fraction ``filler`` of each query's tokens comes from random clusters; the rest from its target's.
    """
    device = corpus.tokens.device
    gen = torch.Generator(device=device).manual_seed(seed)
    targets = torch.randint(0, corpus.n_segments, (n_queries,), generator=gen, device=device)
    cps = corpus.clusters.shape[1]
    own = corpus.clusters[targets][:, torch.randint(0, cps, (q_tokens,), generator=gen, device=device)]
    rand = torch.randint(0, corpus.centroids.shape[0], (n_queries, q_tokens), generator=gen, device=device)
    use_rand = torch.rand((n_queries, q_tokens), generator=gen, device=device) < filler
    ids = torch.where(use_rand, rand, own).reshape(-1)
    q = _noisy(corpus.centroids, ids, noise, gen)
    offsets = torch.arange(0, (n_queries + 1) * q_tokens, q_tokens, dtype=torch.int64, device=device)
    return q, offsets, targets
