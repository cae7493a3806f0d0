"""Search sharded over Ray actors: the parts of one index version spread over actors (each on its own GPU
where there are several); each actor returns its top k rows and the caller merges them by score, then by
table row, exactly as a single :class:`~maxsim.search.Searcher` orders its hits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from maxsim.distributed.cluster import gpus_per_worker, init, ray_module
from maxsim.encoders import query_labels
from maxsim.index.store import Store
from maxsim.kernels import merge_topk
from maxsim.search import Searcher, SearchOptions, SearchResult, SearchStats, prepare_queries, rows_to_global
from maxsim.search.hits import label_results
from maxsim.types import Hit


class _Shard:
    """A Ray actor holding some parts of one index version and searching them (on the GPU Ray gave it,
    when it has one)."""

    def __init__(self, path: str, version: int, part_ids: Sequence[str], device: str | None = None,
                 backend: str | None = None) -> None:
        full = Store(path).snapshot(version)
        sub = full.with_parts(part_ids)
        if device is None:  # the GPU Ray gave this actor, when it has one
            device = "cuda" if torch.cuda.is_available() and ray_module().get_gpu_ids() else "cpu"
        self.searcher = Searcher(sub, device=device, backend=backend)
        # shard row -> row of the full version's table
        spans = [np.arange(*full.part_row_span(p["id"])) for p in sub.manifest.parts]
        self.global_rows = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)

    def search(self, q: torch.Tensor, q_off: torch.Tensor, options: SearchOptions
               ) -> tuple[torch.Tensor, torch.Tensor, list[SearchStats]]:
        q = q.to(self.searcher.device)
        s, r, stats = self.searcher.rows(q, q_off, options)
        return s, rows_to_global(r, self.global_rows), stats


def split_parts(parts: Sequence[dict[str, Any]], n_shards: int) -> list[list[str]]:
    """Part ids split into ``n_shards`` groups of about equal token bytes (largest first, greedy)."""
    groups: list[list[str]] = [[] for _ in range(n_shards)]
    load = [0] * n_shards
    for p in sorted(parts, key=lambda p: -int(p.get("n_tokens", p["n_segments"]))):
        i = load.index(min(load))
        groups[i].append(p["id"])
        load[i] += int(p.get("n_tokens", p["n_segments"]))
    return groups


def _merge_stats(per_shard: list[list[SearchStats]]) -> list[SearchStats]:
    """Each query's statistics summed over the shards (segments and what pruned searches read)."""
    out = []
    for stats in zip(*per_shard, strict=True):
        prunes = [s.prune for s in stats if s.prune is not None]
        total = None
        for p in prunes:
            total = p if total is None else total + p
        out.append(replace(stats[0], segments=sum(s.segments for s in stats), prune=total,
                           placement={"shards": len(stats)}))
    return out


class ShardedSearch:
    """Search one version of an index with its parts spread over ``n_shards`` Ray actors.

    ``ShardedSearch(engine, n_shards=2)`` pins ``engine``'s current version; :meth:`search`,
    :meth:`search_batch` and :meth:`search_vectors` take the arguments of the engine's methods
    (``mode="pruned"`` included) and return the same hits; :meth:`query_vectors` returns
    :class:`~maxsim.search.SearchResult` objects whose statistics sum the shards'. Queries are encoded
    here, once. Each shard places its parts on the GPU Ray gave it (``gpus_per_shard``; default one per
    shard when the cluster has GPUs) and searches them there, else on the CPU; the engine's
    ``search_backend`` is the shards' too.
    """

    def __init__(self, engine: Any, n_shards: int = 2, gpus_per_shard: float | None = None) -> None:
        ray = ray_module()
        init()
        if n_shards < 1:
            raise ValueError(f"n_shards must be at least 1, got {n_shards}")
        self.engine = engine
        self.snapshot = engine.snapshot
        self.version = self.snapshot.version
        parts = self.snapshot.manifest.parts
        groups = list(split_parts(parts, min(n_shards, max(1, len(parts)))))
        gpus = gpus_per_worker() if gpus_per_shard is None else gpus_per_shard
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_Shard)
        self._hits = Searcher(self.snapshot)  # builds the hits from the merged rows
        backend = getattr(engine, "search_backend", None)
        self.shards = [actor.remote(str(engine.path), self.version, g, None, backend) for g in groups]

    def search(self, text: str, k: int = 10, videos=None, time_range=None, thumbnails: bool = True,
               **options: Any) -> list[Hit]:
        return self.search_batch([text], k, videos, time_range, thumbnails, **options)[0]

    def search_batch(self, texts: Sequence[str], k: int = 10, videos=None, time_range=None,
                     thumbnails: bool = True, **options: Any) -> list[list[Hit]]:
        """:meth:`search` for several texts; ``rerank=N`` re-ranks each text's hits with the engine's
        reranker, as :meth:`maxsim.Engine.search` does."""
        if isinstance(texts, str):
            raise TypeError("search_batch takes a list of texts; use search() for one")
        opts = SearchOptions(k=k, videos=videos, time_range=time_range, thumbnails=thumbnails, **options)
        texts = list(texts)
        if not texts:
            return []
        # the visual channel over the shards; the transcript channel (small: lines, not frames) in this
        # process, fused as the engine fuses them
        eng = self.engine
        vecs = None if opts.channels == ("transcript",) else eng.encoder.encode_texts(texts)
        first = eng.transcript.search(eng.searcher, texts, opts.first_stage(), lambda o: label_results(
            self.query_vectors(vecs, o), query_labels(eng.encoder, texts, vecs)))
        return [r.hits for r in self.engine.rerank_stage.apply(texts, first, opts)]

    def search_vectors(self, queries: Sequence[torch.Tensor], k: int = 10, videos=None, time_range=None,
                       thumbnails: bool = True, **options: Any) -> list[list[Hit]]:
        opts = SearchOptions(k=k, videos=videos, time_range=time_range, thumbnails=thumbnails, **options)
        return [r.hits for r in self.query_vectors(queries, opts)]

    def query_vectors(self, queries: Sequence[torch.Tensor], options: SearchOptions) -> list[SearchResult]:
        """The hits of each query multi-vector and what its search read, summed over the shards (no
        re-ranking: the reranker needs the query text)."""
        if options.rerank or options.channels not in (None, ("visual",)):
            raise ValueError("rerank needs the query text (so does the transcript channel): use search() or "
                             "search_batch(), not vectors")
        ray = ray_module()
        if self.engine.version != self.version:
            raise RuntimeError(f"the engine moved to version {self.engine.version}; this ShardedSearch "
                               f"serves version {self.version}: make a new one")
        q, q_off = prepare_queries(queries, int(self.snapshot.manifest.dim))
        results = ray.get([s.search.remote(q, q_off, options) for s in self.shards])
        s_all, r_all = torch.cat([x[0] for x in results], 1), torch.cat([x[1] for x in results], 1)
        s, r = merge_topk(s_all, r_all, min(options.k, s_all.shape[1]))
        stats = _merge_stats([x[2] for x in results])
        return self._hits.results(q, q_off, s, r, stats, options)

    def close(self) -> None:
        """Stop the shard actors."""
        ray = ray_module()
        for s in self.shards:
            ray.kill(s)
        self.shards = []
