"""Deprecated: ``maxsim.synthetic`` moved to ``maxsim.testing.synthetic``. This re-export keeps old imports
working for one release; import from the new place."""

import warnings

from maxsim.testing.synthetic import (  # noqa: F401
    COLORS,
    cut_times,
    random_scenes,
    write_video,
)

warnings.warn(
    "maxsim.synthetic is deprecated: import from maxsim.testing.synthetic",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "COLORS",
    "cut_times",
    "random_scenes",
    "write_video",
]
