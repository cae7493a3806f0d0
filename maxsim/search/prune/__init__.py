"""Pruned search (PLAID-style): a prune index beside the parts (:mod:`~maxsim.search.prune.files`), built
by :mod:`~maxsim.search.prune.build` (k-means in :mod:`~maxsim.search.prune.kmeans`, residual codes in
:mod:`~maxsim.search.prune.residuals`), searched by :mod:`~maxsim.search.prune.searcher`."""

from maxsim.search.prune.build import build_part_index, update_prune_index
from maxsim.search.prune.files import PruneSidecar, prune_summary, read_prune_manifest
from maxsim.search.prune.residuals import ResidualCodec
from maxsim.search.prune.searcher import PrunedSearcher, PruneStats

__all__ = [
    "PruneSidecar", "PruneStats", "PrunedSearcher", "ResidualCodec", "build_part_index", "prune_summary",
    "read_prune_manifest", "update_prune_index",
]
