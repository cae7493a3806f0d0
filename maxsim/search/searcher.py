"""Searching one snapshot: queries prepared once, the allowed rows, exact or pruned top-k rows, hits.

:class:`Searcher` is what the engine, the HTTP service (through the engine) and each shard of
:class:`~maxsim.distributed.ShardedSearch` search with. It keeps the snapshot's placed corpus and the
pruned searcher of its prune index, and reuses both from the previous version's searcher where they can be.

Two paths, chosen by the kernel backend. The compiled CPU kernel scores the memory maps (the host path).
Triton (on a GPU, or on CPU tensors under ``TRITON_INTERPRET=1``) and torch score a placed corpus on the
device (the device path): queries stay on the device from the encoder to the kernel, one launch per
resident group with the fused top-k, filters and deletes as a device mask, every merge on the device, and
one host synchronisation per search batch, when the results are read to build the hits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maxsim.index.snapshot import Snapshot
from maxsim.kernels import resolve_backend
from maxsim.search.corpus import Corpus, parse_device
from maxsim.search.exact import exact_topk, placed_topk
from maxsim.search.filters import allowed_rows
from maxsim.search.hits import build_hits
from maxsim.search.options import DEFAULT_NPROBE, SearchOptions, default_candidates, default_refine
from maxsim.search.prune.device import DevicePrunedSearcher
from maxsim.search.prune.files import prune_stamp
from maxsim.search.prune.searcher import PrunedSearcher
from maxsim.search.result import SearchResult, SearchStats


def prepare_queries(queries: Sequence[torch.Tensor], dim: int, device: torch.device | str = "cpu",
                    check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Query multi-vectors stacked into one float32 matrix on ``device`` and its CSR offsets (on the CPU).
    Each query must be ``(n_tokens, dim)`` with finite values: ValueError naming the query otherwise
    (``check_finite=False`` leaves the value check to the caller, who can do it without waiting for a
    device)."""
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
    if check_finite and not bool(torch.isfinite(q).all()):
        _raise_not_finite(queries)
    q_off = torch.zeros(len(queries) + 1, dtype=torch.int64)
    q_off[1:] = torch.cumsum(torch.tensor([x.shape[0] for x in queries]), 0)
    return q, q_off


def _raise_not_finite(queries: Sequence[torch.Tensor]) -> None:
    bad = next(i for i, x in enumerate(queries) if not bool(torch.isfinite(x.float()).all()))
    raise ValueError(f"query {bad} has NaN or infinite values")


def _fetch(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Host copies of device tensors, with one synchronisation for all of them."""
    dev = tensors[0].device
    if dev.type != "cuda":
        return [t.cpu() for t in tensors]
    out = []
    for t in tensors:
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        out.append(host)
    torch.cuda.current_stream(dev).synchronize()
    return out


class Searcher:
    """Exact and pruned search over one snapshot (see the module docstring).

    ``device`` places the tokens (see :class:`~maxsim.search.corpus.Corpus`); ``backend`` forces a MaxSim
    kernel backend (``"triton"``, ``"cpu"``, ``"torch"``; None: the device's default). ``previous``: the
    searcher of an older version of the same index, whose placement is reused.
    """

    def __init__(self, snapshot: Snapshot, device: str | torch.device | None = "cpu",
                 backend: str | None = None, previous: Searcher | None = None, *, placement: str = "auto",
                 budget: int | float | None = None, devices: list[str | torch.device] | None = None) -> None:
        self.snapshot = snapshot
        dev = parse_device(devices[0] if devices else device)
        self.backend = resolve_backend(backend, dev)
        if placement == "auto":
            placement = "mapped" if self.backend == "cpu" else "resident"
        if placement == "mapped" and self.backend != "cpu":
            raise ValueError(f"mapped placement is for the 'cpu' backend, not {self.backend!r}")
        if placement != "mapped" and self.backend == "cpu":
            raise ValueError(f"the 'cpu' backend reads the memory maps: placement {placement!r} needs "
                             "backend 'triton' or 'torch'")
        prev = None if previous is None else previous.corpus
        self.corpus = Corpus.place(snapshot, dev, placement=placement, budget=budget, devices=devices,
                                   previous=prev)
        self._pruner: PrunedSearcher | None = None
        self._device_pruner: DevicePrunedSearcher | None = None
        self._prev_device_pruner = None if previous is None else previous._device_pruner
        self._rows_cache: dict = {}

    @property
    def device(self) -> torch.device:
        return self.corpus.device

    @property
    def placed(self) -> bool:
        """True on the device path (a placed corpus), False on the host path (memory maps)."""
        return self.corpus.placement != "mapped"

    def pruner(self) -> PrunedSearcher:
        """The pruned searcher of this snapshot's prune index, reloaded when the prune index changed."""
        cached = self._pruner
        if cached is None or cached.stamp != prune_stamp(self.snapshot.root):
            cached = self._pruner = PrunedSearcher(self.snapshot)
        return cached

    def device_pruner(self) -> DevicePrunedSearcher:
        """The pruned searcher on the device (prune arrays uploaded once, reused by part)."""
        host = self.pruner()
        cached = self._device_pruner
        if cached is None or cached.host is not host:
            prev = cached or self._prev_device_pruner
            cached = self._device_pruner = DevicePrunedSearcher(host, self.corpus, self.backend, prev)
            self._prev_device_pruner = None
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
            nprobe = options.nprobe or DEFAULT_NPROBE
            n_candidates = max(n_candidates, k)
            if self.placed:
                pruner = self.device_pruner()
                s, r, pstats = pruner.search(q, q_off, allowed, k, n_candidates, nprobe, n_refine)
            else:
                s, r, pstats = self.pruner().search(q.cpu(), q_off, allowed, k, n_candidates=n_candidates,
                                                    nprobe=nprobe, n_refine=n_refine)
            for st, ps in zip(stats, pstats, strict=True):
                st.prune = ps
            return s, r, stats
        if self.placed:
            s, r = placed_topk(self.corpus, q, q_off, allowed, k, self.backend, self._rows_cache)
        else:
            s, r = exact_topk(self.corpus, q, q_off, allowed, k, self.backend)
        return s, r, stats

    def search(self, queries: Sequence[torch.Tensor], options: SearchOptions) -> list[SearchResult]:
        """The hits of each query multi-vector, with what its search did. On the device path the results,
        the queries (for the best frame times) and the check that every query value is finite are read
        back together: one host synchronisation."""
        device = self.device
        q, q_off = prepare_queries(queries, self.corpus.dim, device, check_finite=device.type == "cpu")
        finite = torch.isfinite(q).all().reshape(1) if device.type != "cpu" else None
        s, r, stats = self.rows(q, q_off, options)
        if device.type != "cpu":
            s, r, q, ok = _fetch(s, r, q, finite)
            if not bool(ok[0]):
                _raise_not_finite(queries)
        return self.results(q, q_off, s.cpu(), r.cpu(), stats, options)

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
