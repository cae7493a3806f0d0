"""Exact, memory-bounded MaxSim in plain torch: the reference every faster backend is checked against."""

from __future__ import annotations

import torch

# Largest similarity block (query tokens x segment tokens) materialised at once, in elements.
_BLOCK_ELEMENTS = 1 << 24


def check_ragged(name: str, x: torch.Tensor, offsets: torch.Tensor, dim: int | None = None) -> int:
    """Validate a flat token matrix and its CSR offsets; return the number of items."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (total_tokens, dim), got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dim {x.shape[1]} but the queries have dim {dim}")
    if offsets.ndim != 1 or offsets.numel() < 1:
        raise ValueError(
            f"{name}_offsets must be 1-D with n + 1 >= 1 entries, got shape {tuple(offsets.shape)}"
        )
    if offsets.dtype.is_floating_point or offsets.dtype == torch.bool:
        raise TypeError(f"{name}_offsets must be an integer tensor, got {offsets.dtype}")
    o = offsets.detach().to("cpu", torch.int64)
    if int(o[0]) != 0:
        raise ValueError(f"{name}_offsets must start at 0, got {int(o[0])}")
    if int(o[-1]) != x.shape[0]:
        raise ValueError(f"{name}_offsets must end at the row count {x.shape[0]} of {name}, got {int(o[-1])}")
    if bool((o[1:] < o[:-1]).any()):
        raise ValueError(f"{name}_offsets must be non-decreasing")
    return o.numel() - 1


def _scores_block(
    qf: torch.Tensor, q_ids: torch.Tensor, n_q: int, d: torch.Tensor, d_ids: torch.Tensor, n_d: int
) -> torch.Tensor:
    """Scores of all queries against one block of whole segments (ids local to the block)."""
    sim = qf @ d.float().T  # (Tq, Td)
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


def _prepare(q: torch.Tensor, q_offsets: torch.Tensor, d: torch.Tensor, d_offsets: torch.Tensor):
    n_q = check_ragged("q", q, q_offsets)
    check_ragged("d", d, d_offsets, dim=q.shape[1])
    if q.device != d.device:
        raise ValueError(f"q is on {q.device} but d is on {d.device}")
    qo = q_offsets.detach().to(q.device, torch.int64)
    q_ids = torch.repeat_interleave(torch.arange(n_q, device=q.device), qo[1:] - qo[:-1])
    rows = max(1, _BLOCK_ELEMENTS // max(1, q.shape[0]))
    return n_q, q.float(), q_ids, d_offsets.detach().to("cpu", torch.int64), rows


def maxsim_scores(
    q: torch.Tensor, q_offsets: torch.Tensor, d: torch.Tensor, d_offsets: torch.Tensor
) -> torch.Tensor:
    """MaxSim score of every query against every segment: float32 ``(n_queries, n_docs)``."""
    n_q, qf, q_ids, do, rows = _prepare(q, q_offsets, d, d_offsets)
    n_d = do.numel() - 1
    out = torch.empty((n_q, n_d), dtype=torch.float32, device=q.device)
    for i, j in _blocks(do, rows):
        lo, hi = int(do[i]), int(do[j])
        counts = (do[i + 1 : j + 1] - do[i:j]).to(q.device)
        d_ids = torch.repeat_interleave(torch.arange(j - i, device=q.device), counts)
        out[:, i:j] = _scores_block(qf, q_ids, n_q, d[lo:hi], d_ids, j - i)
    return out


def maxsim_topk(
    q: torch.Tensor, q_offsets: torch.Tensor, d: torch.Tensor, d_offsets: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query: ``(scores[n_queries, k], indices[n_queries, k])``, best first.

    Ties keep the lower segment index first. Where fewer than k segments exist the tail is filled with
    score ``-inf`` and index ``-1``.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n_q, qf, q_ids, do, rows = _prepare(q, q_offsets, d, d_offsets)
    best_s = torch.full((n_q, k), float("-inf"), dtype=torch.float32, device=q.device)
    best_i = torch.full((n_q, k), -1, dtype=torch.int64, device=q.device)
    if k == 0:
        return best_s, best_i
    for i, j in _blocks(do, max(rows, 1)):
        lo, hi = int(do[i]), int(do[j])
        counts = (do[i + 1 : j + 1] - do[i:j]).to(q.device)
        d_ids = torch.repeat_interleave(torch.arange(j - i, device=q.device), counts)
        s = _scores_block(qf, q_ids, n_q, d[lo:hi], d_ids, j - i)
        idx = torch.arange(i, j, device=q.device).expand(n_q, -1)
        best_s, best_i = _merge_topk(torch.cat([best_s, s], 1), torch.cat([best_i, idx], 1), k)
    return best_s, best_i


def _merge_topk(s: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k by score descending, ties by index ascending (missing entries, index -1, go last)."""
    key_idx = torch.where(idx < 0, torch.iinfo(torch.int64).max, idx)
    order = torch.argsort(key_idx, dim=1, stable=True)
    s, idx = s.gather(1, order), idx.gather(1, order)
    order = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]
    return s.gather(1, order), idx.gather(1, order)
