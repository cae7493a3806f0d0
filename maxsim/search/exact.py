"""Exact MaxSim search: every allowed segment of a placed corpus scored, the top k kept per query."""

from __future__ import annotations

import numpy as np
import torch

from maxsim import kernels
from maxsim.search.corpus import Corpus, PlacedChunk


def exact_topk(corpus: Corpus, q: torch.Tensor, q_off: torch.Tensor, allowed: np.ndarray, k: int,
               backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` (scores, snapshot table rows) of each query among the ``allowed`` rows, ``(n_q, k)``,
    best first, ties by the lower row; ``-inf`` / ``-1`` past the allowed segments. ``q`` (stacked query
    tokens) must be on the corpus's device; ``q_off`` are its CSR offsets."""
    n_q = q_off.numel() - 1
    best_s = torch.full((n_q, k), float("-inf"))
    best_r = torch.full((n_q, k), -1, dtype=torch.int64)
    for ch in corpus.chunks:
        ok = allowed[ch.rows]
        if not ok.any():
            continue
        s, r = _score_chunk(q, q_off, ch, ok, k, backend)
        best_s, best_r = kernels.merge_topk(torch.cat([best_s, s], 1), torch.cat([best_r, r], 1), k)
    return best_s, best_r


def _score_chunk(q: torch.Tensor, q_off: torch.Tensor, ch: PlacedChunk, ok: np.ndarray, k: int,
                 backend: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k table rows of one chunk among the allowed ones: (scores, rows)."""
    n_excluded = int((~ok).sum())
    if n_excluded == 0 or n_excluded <= k:
        kk = min(k + n_excluded, len(ok))
        s, idx = kernels.maxsim_topk(q, q_off, ch.tokens, ch.host_offsets, kk, d_scale=ch.scales,
                                     backend=backend)
        s, idx = s.cpu(), idx.cpu()
        rows = torch.from_numpy(ch.rows)[idx.clamp(min=0)]
        keep = torch.from_numpy(ok)[idx.clamp(min=0)] & (idx >= 0)
        s = torch.where(keep, s, torch.tensor(float("-inf")))
        rows = torch.where(keep, rows, torch.tensor(-1))
        return s, rows
    sel = np.flatnonzero(ok)
    offsets = ch.host_offsets
    starts, ends = offsets[sel], offsets[sel + 1]
    counts = ends - starts
    tok_idx = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts) + torch.arange(
        int(counts.sum())
    )
    tok_idx = tok_idx.to(ch.tokens.device)
    d = ch.tokens[tok_idx]
    d_scale = None if ch.scales is None else ch.scales[tok_idx]
    d_off = torch.zeros(sel.size + 1, dtype=torch.int64)
    d_off[1:] = torch.cumsum(counts, 0)
    s, idx = kernels.maxsim_topk(q, q_off, d, d_off, min(k, sel.size), d_scale=d_scale, backend=backend)
    s, idx = s.cpu(), idx.cpu()
    rows = torch.from_numpy(ch.rows[sel])[idx.clamp(min=0)]
    return s, torch.where(idx >= 0, rows, torch.tensor(-1))
