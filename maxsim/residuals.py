"""Deprecated: ``maxsim.residuals`` moved to ``maxsim.search.prune.residuals``. This re-export keeps old
imports working for one release; import from the new place."""

import warnings

from maxsim.search.prune.residuals import (  # noqa: F401
    NBITS,
    ResidualCodec,
)

warnings.warn(
    "maxsim.residuals is deprecated: import from maxsim.search.prune.residuals",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "NBITS",
    "ResidualCodec",
]
