"""Exact, memory-bounded MaxSim in plain torch: the reference every faster backend is checked against."""

from __future__ import annotations

import torch
from maxsim.kernels.validate import Problem, check_offsets, new_output

# Largest similarity block (query tokens x segment tokens) materialised at once, in elements.
_BLOCK_ELEMENTS = 1 << 24


def check_ragged(name: str, x: torch.Tensor, offsets: torch.Tensor, dim: int | None = None) -> int:
    """Validate a flat token matrix and its CSR offsets; return the number of items."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (total_tokens, dim), got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dim {x.shape[1]} but the queries have dim {dim}")
    return check_offsets(name, x.shape[0], offsets).numel() - 1


def _scores_block(
    qf: torch.Tensor,
    q_ids: torch.Tensor,
    n_q: int,
    d: torch.Tensor,
    d_ids: torch.Tensor,
    n_d: int,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores of all queries against one block of whole segments (ids local to the block).

    ``scale`` holds one factor per row of ``d`` (already expanded), or is None.
    """
    df = d.float()
    if scale is not None:
        df = df * scale[:, None]
    sim = qf @ df.T  # (Tq, Td)
    best = torch.full((qf.shape[0], n_d), float("-inf"), dtype=torch.float32, device=qf.device)
    best.scatter_reduce_(1, d_ids.expand(qf.shape[0], -1), sim, reduce="amax", include_self=True)
    out = torch.zeros((n_q, n_d), dtype=torch.float32, device=qf.device)
    out.index_add_(0, q_ids, best)
    return out


def _blocks(d_offsets: torch.Tensor, rows_per_block: int):
    """Split segments into consecutive runs whose token count stays near rows_per_block."""
    o = d_offsets.tolist()
    n = len(o) - 1
    i = 0
    while i < n:
        j = i + 1
        while j < n and o[j + 1] - o[i] <= rows_per_block:
            j += 1
        yield i, j
        i = j


def _prepare(p: Problem):
    q = p.q
    qo = p.q_offsets.to(q.device)
    q_ids = torch.repeat_interleave(torch.arange(p.n_q, device=q.device), qo[1:] - qo[:-1])
    rows = max(1, _BLOCK_ELEMENTS // max(1, q.shape[0]))
    return p.n_q, q.float(), q_ids, p.d_offsets, rows


def _block(p: Problem, i: int, j: int):
    """Rows, local segment ids and expanded scales of segments i..j-1."""
    do, dev = p.d_offsets, p.d.device
    lo, hi = int(do[i]), int(do[j])
    counts = (do[i + 1 : j + 1] - do[i:j]).to(dev)
    d_ids = torch.repeat_interleave(torch.arange(j - i, device=dev), counts)
    scale = None
    if p.scale_per == "token":
        scale = p.d_scale[lo:hi]
    elif p.scale_per == "segment":
        scale = p.d_scale[i:j][d_ids]
    return p.d[lo:hi], d_ids, scale


def scores(p: Problem, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MaxSim scores of a validated problem: float32 ``(n_queries, n_docs)``; segments left out by
    ``mask`` (bool or int8 per segment, 0 = out) score ``-inf``."""
    n_q, qf, q_ids, do, rows = _prepare(p)
    n_d = p.n_d
    out = new_output((n_q, n_d), torch.float32, p.q.device)
    for i, j in _blocks(do, rows):
        d, d_ids, scale = _block(p, i, j)
        out[:, i:j] = _scores_block(qf, q_ids, n_q, d, d_ids, j - i, scale)
    if mask is not None:
        out.masked_fill_(~mask.to(device=out.device, dtype=torch.bool)[None, :], float("-inf"))
    return out


def topk(p: Problem, k: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query of a validated problem (see :func:`maxsim.kernels.maxsim_topk`);
    segments left out by ``mask`` (0 = out) never appear."""
    n_q, qf, q_ids, do, rows = _prepare(p)
    dev = p.q.device
    keep = None if mask is None else mask.to(device=dev, dtype=torch.bool)
    best_s = torch.full((n_q, k), float("-inf"), dtype=torch.float32, device=dev)
    best_i = torch.full((n_q, k), -1, dtype=torch.int64, device=dev)
    if k == 0:
        return best_s, best_i
    for i, j in _blocks(do, max(rows, 1)):
        d, d_ids, scale = _block(p, i, j)
        s = _scores_block(qf, q_ids, n_q, d, d_ids, j - i, scale)
        idx = torch.arange(i, j, device=dev).expand(n_q, -1)
        if keep is not None:
            s = torch.where(keep[i:j][None, :], s, float("-inf"))
            idx = torch.where(keep[i:j][None, :], idx, -1)
        best_s, best_i = merge_topk(torch.cat([best_s, s], 1), torch.cat([best_i, idx], 1), k)
    return best_s, best_i


def merge_topk(s: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k by score descending, ties by index ascending (missing entries, index -1, go last).

    Pure device ops (two stable sorts): no host synchronisation. Pads with -inf / -1 when fewer than k
    candidates exist.
    """
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = torch.cat([s, s.new_full((s.shape[0], pad), float("-inf"))], 1)
        idx = torch.cat([idx, idx.new_full((idx.shape[0], pad), -1)], 1)
    key_idx = torch.where(idx < 0, torch.iinfo(torch.int64).max, idx)
    order = torch.argsort(key_idx, dim=1, stable=True)
    s, idx = s.gather(1, order), idx.gather(1, order)
    order = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]
    return s.gather(1, order), idx.gather(1, order)


