"""Deprecated: ``maxsim.search_options`` moved to ``maxsim.search.options``. This re-export keeps old imports
working for one release; import from the new place."""

import warnings

from maxsim.search.options import (  # noqa: F401
    BOUNDS,
    MAX_CANDIDATES,
    MAX_NPROBE,
    MAX_REFINE,
    MODES,
    OPTION_KEYS,
    PRUNED_KEYS,
    check_search_options,
)

warnings.warn(
    "maxsim.search_options is deprecated: import from maxsim.search.options",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "BOUNDS",
    "MAX_CANDIDATES",
    "MAX_NPROBE",
    "MAX_REFINE",
    "MODES",
    "OPTION_KEYS",
    "PRUNED_KEYS",
    "check_search_options",
]
