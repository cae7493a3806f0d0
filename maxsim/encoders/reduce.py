"""Token reduction at ingest: fewer vectors per segment, so fewer bytes to store and to score.

Pure token maths; two reductions, applied in this order by :func:`reduce_tokens` (and so by
:class:`~maxsim.encoders.pooled.PooledEncoder`):

- :func:`drop_duplicate_tokens`: a token of frame ``f`` is dropped when a token kept for an earlier frame
  (still "active": kept in frame ``f - 1`` or standing in for a token dropped there) has cosine similarity
  >= ``threshold`` with it. Every dropped token therefore has a kept stand-in at cosine >= ``threshold``,
  which bounds what any query token can lose: ``max_j <q, s_j>`` drops by at most
  ``sqrt(2 - 2 * threshold)`` for a unit query token.
- :func:`pool_tokens`: hierarchical (Ward) clustering of a segment's tokens into ``ceil(n / factor)``
  clusters, each replaced by its re-normalised mean (the token pooling of ColPali-style retrievers).
  Clustering runs over windows of at most ``window`` consecutive tokens, which bounds its O(n^2) cost and
  keeps each pooled token local in time. Pooled tokens are emitted ordered by the mean position of their
  members, so a segment's tokens stay in (approximate) frame order.

Queries are never reduced.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _frame_bounds(n_tokens: int, n_frames: int) -> np.ndarray:
    """Token offsets ``(n_frames + 1,)`` of each frame, tokens split as evenly as possible in order."""
    n_frames = max(1, min(int(n_frames), n_tokens)) if n_tokens else 1
    return np.linspace(0, n_tokens, n_frames + 1).round().astype(np.int64)


def drop_duplicate_tokens(
    tokens: torch.Tensor, n_frames: int, threshold: float = 0.95
) -> tuple[torch.Tensor, np.ndarray]:
    """Drop tokens that nearly repeat a token kept for the previous frame.

    ``tokens`` is ``(n, dim)``, L2-normalised rows in frame order, split evenly over ``n_frames`` frames.
    Returns the kept tokens (in their original order) and their indices into ``tokens``. The first frame
    is always kept whole; ``threshold >= 1`` keeps everything.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n, dim), got shape {tuple(tokens.shape)}")
    if not 0.0 < threshold:
        raise ValueError(f"dedup threshold must be a cosine in (0, 1], got {threshold!r}")
    n = tokens.shape[0]
    if n == 0 or threshold >= 1.0 or n_frames <= 1:
        return tokens, np.arange(n)
    x = tokens.detach().float().cpu()
    bounds = _frame_bounds(n, n_frames)
    kept: list[np.ndarray] = [np.arange(bounds[0], bounds[1])]
    active = kept[0]  # indices of tokens that stand for the previous frame
    for f in range(1, bounds.size - 1):
        idx = np.arange(bounds[f], bounds[f + 1])
        if idx.size == 0:
            continue
        sim = x[idx] @ x[active].T  # (frame tokens, active tokens)
        best, arg = sim.max(1)
        dup = (best >= threshold).numpy()
        new = idx[~dup]
        kept.append(new)
        # the stand-ins of dropped tokens stay active; kept tokens become active
        active = np.unique(np.concatenate([new, active[arg.numpy()[dup]]]))
    keep = np.concatenate(kept)
    return tokens[torch.from_numpy(keep)], keep


def pool_tokens(
    tokens: torch.Tensor, factor: float = 2.0, window: int = 1024
) -> tuple[torch.Tensor, np.ndarray]:
    """Pool ``(n, dim)`` tokens to ``ceil(n / factor)`` by Ward clustering in windows of ``window`` tokens.

    Returns the pooled, L2-normalised tokens (float32, ordered by the mean position of their members)
    and, for every input token, the index of the pooled token it went into. ``factor <= 1`` returns the
    tokens unchanged.
    """
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('token pooling needs SciPy: pip install -e ".[scale]" in the maxsim checkout'
                          ) from e

    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n, dim), got shape {tuple(tokens.shape)}")
    if not math.isfinite(factor) or factor < 1:
        raise ValueError(f"pooling factor must be >= 1, got {factor!r}")
    if window < 2:
        raise ValueError(f"pooling window must be at least 2 tokens, got {window!r}")
    n = tokens.shape[0]
    if factor == 1 or n <= 1:
        return tokens.detach().float().cpu(), np.arange(n)
    x = tokens.detach().cpu().double().numpy()
    labels = np.empty(n, dtype=np.int64)
    n_windows = math.ceil(n / window)
    next_label = 0
    for w in range(n_windows):
        lo, hi = n * w // n_windows, n * (w + 1) // n_windows
        m = hi - lo
        k = max(1, math.ceil(m / factor))
        if k >= m:
            labels[lo:hi] = next_label + np.arange(m)
        else:
            z = linkage(x[lo:hi], method="ward")
            lab = fcluster(z, t=k, criterion="maxclust") - 1
            labels[lo:hi] = next_label + lab
        next_label = int(labels[lo:hi].max()) + 1
    # compact labels, order clusters by the mean position of their members
    uniq, inv = np.unique(labels, return_inverse=True)
    counts = np.bincount(inv, minlength=uniq.size)
    mean_pos = np.bincount(inv, weights=np.arange(n), minlength=uniq.size) / counts
    order = np.argsort(mean_pos, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    assign = rank[inv]
    sums = torch.zeros(uniq.size, tokens.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.from_numpy(assign), torch.from_numpy(x))
    pooled = torch.nn.functional.normalize(sums, dim=1).float()
    return pooled, assign


def reduce_tokens(
    tokens: torch.Tensor, n_frames: int, factor: float = 1.0, dedup: float | None = None, window: int = 1024
) -> torch.Tensor:
    """A segment's tokens after duplicate dropping (when ``dedup`` is a cosine) then pooling by ``factor``."""
    if dedup is not None:
        tokens, _ = drop_duplicate_tokens(tokens, n_frames, dedup)
    if factor > 1:
        tokens, _ = pool_tokens(tokens, factor, window)
    return tokens
