"""Searching one snapshot: queries prepared once, the allowed rows, exact or pruned top-k rows, hits.

:class:`Searcher` is what the engine, the HTTP service (through the engine) and each shard of
:class:`~maxsim.distributed.ShardedSearch` search with. It keeps the snapshot's placed corpus and the
pruned searcher of its prune index, and reuses both from the previous version's searcher where they can be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maxsim.index.snapshot import Snapshot
from maxsim.kernels import resolve_backend
from maxsim.search.corpus import Corpus
from maxsim.search.exact import exact_topk
from maxsim.search.filters import allowed_rows
from maxsim.search.hits import build_hits
from maxsim.search.options import DEFAULT_NPROBE, SearchOptions, default_candidates, default_refine
from maxsim.search.prune.files import prune_stamp
from maxsim.search.prune.searcher import PrunedSearcher
from maxsim.search.result import SearchResult, SearchStats


def prepare_queries(queries: Sequence[torch.Tensor], dim: int, device: torch.device | str = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Query multi-vectors stacked into one float32 matrix on ``device`` and its CSR offsets (on the CPU).
    Each query must be ``(n_tokens, dim)`` with finite values: ValueError naming the query otherwise."""
    if isinstance(queries, torch.Tensor):
        raise TypeError("queries must be a sequence of (n_tokens, dim) tensors, one per query, not a tensor")
    for i, q in enumerate(queries):
        if not isinstance(q, torch.Tensor):
            raise TypeError(f"query {i} is a {type(q).__name__}; expected a torch.Tensor (n_tokens, {dim})")
        if q.ndim != 2 or q.shape[1] != dim:
            raise ValueError(f"query {i} has shape {tuple(q.shape)}; expected (n_tokens, {dim})")
    if not queries:
        return torch.zeros(0, dim, device=device), torch.zeros(1, dtype=torch.int64)
    q = torch.cat([x.detach().to(device=device, dtype=torch.float32) for x in queries])
    if not bool(torch.isfinite(q).all()):
        bad = next(i for i, x in enumerate(queries) if not bool(torch.isfinite(x.float()).all()))
        raise ValueError(f"query {bad} has NaN or infinite values")
    q_off = torch.zeros(len(queries) + 1, dtype=torch.int64)
    q_off[1:] = torch.cumsum(torch.tensor([x.shape[0] for x in queries]), 0)
    return q, q_off


class Searcher:
    """Exact and pruned search over one snapshot (see the module docstring).

    ``device`` places the tokens (see :class:`~maxsim.search.corpus.Corpus`); ``backend`` forces a MaxSim
    kernel backend (``"triton"``, ``"cpu"``, ``"torch"``; None: the device's default). ``previous``: the
    searcher of an older version of the same index, whose placement is reused.
    """

    def __init__(self, snapshot: Snapshot, device: str | torch.device | None = "cpu",
                 backend: str | None = None, previous: Searcher | None = None) -> None:
        self.snapshot = snapshot
        self.corpus = Corpus(snapshot, device, None if previous is None else previous.corpus)
        self.backend = resolve_backend(backend, self.corpus.device)
        self._pruner: PrunedSearcher | None = None

    @property
    def device(self) -> torch.device:
        return self.corpus.device

    def pruner(self) -> PrunedSearcher:
        """The pruned searcher of this snapshot's prune index, reloaded when the prune index changed."""
        cached = self._pruner
        if cached is None or cached.stamp != prune_stamp(self.snapshot.root):
            cached = self._pruner = PrunedSearcher(self.snapshot)
        return cached

    def rows(self, q: torch.Tensor, q_off: torch.Tensor, options: SearchOptions
             ) -> tuple[torch.Tensor, torch.Tensor, list[SearchStats]]:
        """Top k (scores, snapshot table rows) of each query, ``(n_q, <= k)``, best first with ties on the
        lower row, ``-inf`` / ``-1`` past the allowed segments; and what each query's search did. k is cut
        to the number of allowed segments."""
        n_q = q_off.numel() - 1
        allowed = allowed_rows(self.snapshot, options)
        n_allowed = int(allowed.sum())
        k = min(options.k, n_allowed)
        stats = [SearchStats(mode=options.mode, segments=n_allowed, backend=self.backend,
                             device=str(self.device), placement=self.corpus.stats()) for _ in range(n_q)]
        if k == 0 or n_q == 0:
            return (torch.full((n_q, 0), float("-inf")), torch.full((n_q, 0), -1, dtype=torch.int64), stats)
        if options.mode == "pruned":
            n_candidates = options.n_candidates or default_candidates(k, n_allowed)
            n_refine = default_refine(k, n_allowed) if options.n_refine is None else options.n_refine
            s, r, pstats = self.pruner().search(
                q.cpu(), q_off, allowed, k, n_candidates=max(n_candidates, k),
                nprobe=options.nprobe or DEFAULT_NPROBE, n_refine=n_refine,
            )
            for st, ps in zip(stats, pstats, strict=True):
                st.prune, st.backend, st.device = ps, "cpu", "cpu"
            return s, r, stats
        s, r = exact_topk(self.corpus, q, q_off, allowed, k, self.backend)
        return s, r, stats

    def search(self, queries: Sequence[torch.Tensor], options: SearchOptions) -> list[SearchResult]:
        """The hits of each query multi-vector, with what its search did."""
        q, q_off = prepare_queries(queries, self.corpus.dim, self.device)
        s, r, stats = self.rows(q, q_off, options)
        return self.results(q, q_off, s, r, stats, options)

    def results(self, q: torch.Tensor, q_off: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor,
                stats: list[SearchStats], options: SearchOptions) -> list[SearchResult]:
        """Top-k rows of this snapshot turned into hits, one :class:`SearchResult` per query."""
        out = []
        for i in range(q_off.numel() - 1):
            qi = q[int(q_off[i]) : int(q_off[i + 1])]
            hits = build_hits(self.snapshot, qi, scores[i], rows[i], options.thumbnails)
            out.append(SearchResult(hits, stats[i]))
        return out


def rows_to_global(rows: torch.Tensor, global_rows: np.ndarray) -> torch.Tensor:
    """Table rows of a sub-snapshot (e.g. a shard's) as rows of the full snapshot (``global_rows[i]`` is
    the full row of sub-row ``i``); -1 stays -1."""
    if global_rows.size == 0:
        return rows
    g = torch.from_numpy(global_rows)[rows.clamp(min=0)]
    return torch.where(rows >= 0, g, torch.tensor(-1))
