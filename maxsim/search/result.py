"""What a search returns: its hits and what it did (:class:`SearchResult`, :class:`SearchStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maxsim.search.prune.searcher import PruneStats
from maxsim.types import Hit


@dataclass
class SearchStats:
    """What one query's search did: its mode, the segments it could match, where it scored them, for a
    pruned search what it read (:class:`~maxsim.search.prune.searcher.PruneStats`), and when its hits were
    re-ranked, how many, by which reranker and in how long."""

    mode: str = "exact"
    segments: int = 0  # live segments the filters allowed
    backend: str = ""  # the kernel backend that scored them ("cpu", "triton", "torch")
    device: str = "cpu"
    prune: PruneStats | None = None
    placement: dict[str, Any] = field(default_factory=dict)  # how the corpus was placed (see Corpus.stats)
    reranked: int = 0  # hits the reranker re-scored (0: no re-ranking)
    reranker: str | None = None  # its name
    rerank_ms: float | None = None  # wall-clock time of the re-ranking (decoding frames included)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "segments": self.segments, "backend": self.backend,
                               "device": self.device}
        if self.prune is not None:
            out["prune"] = self.prune.to_dict()
        if self.placement:
            out["placement"] = dict(self.placement)
        if self.reranker is not None:
            out["rerank"] = {"hits": self.reranked, "reranker": self.reranker, "ms": self.rerank_ms}
        return out


@dataclass
class SearchResult:
    """The hits of one query, best first, and what its search did."""

    hits: list[Hit]
    stats: SearchStats


def sum_prune_stats(results: list[SearchResult]) -> PruneStats | None:
    """The prune statistics of several results summed (None when none of them was pruned)."""
    stats = [r.stats.prune for r in results if r.stats.prune is not None]
    if not stats:
        return None
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    return total
