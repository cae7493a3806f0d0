"""Deprecated: ``maxsim.candidates`` moved to ``maxsim.search.prune``. This re-export keeps old imports
working for one release; import from the new place."""

import warnings

from maxsim.search.prune.build import (  # noqa: F401
    build_part_index,
    update_prune_index,
)
from maxsim.search.prune.files import (  # noqa: F401
    PRUNE_DIR,
    PRUNE_FORMAT,
    PRUNE_MANIFEST,
    READ_FORMATS,
    RESIDUAL_BITS,
    PartIndex,
    load_part_index,
    prune_stamp,
    prune_summary,
    read_prune_manifest,
    save_part_index,
)
from maxsim.search.prune.kmeans import (  # noqa: F401
    KMEANSPP_MAX,
    build_device,
    default_n_centroids,
    spherical_kmeans,
)
from maxsim.search.prune.searcher import (  # noqa: F401
    PrunedSearcher,
    PruneStats,
)

warnings.warn(
    "maxsim.candidates is deprecated: import from maxsim.search.prune",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "KMEANSPP_MAX",
    "PRUNE_DIR",
    "PRUNE_FORMAT",
    "PRUNE_MANIFEST",
    "PartIndex",
    "PruneStats",
    "PrunedSearcher",
    "READ_FORMATS",
    "RESIDUAL_BITS",
    "build_device",
    "build_part_index",
    "default_n_centroids",
    "load_part_index",
    "prune_stamp",
    "prune_summary",
    "read_prune_manifest",
    "save_part_index",
    "spherical_kmeans",
    "update_prune_index",
]
