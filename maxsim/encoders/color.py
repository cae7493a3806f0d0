"""Deprecated: ``maxsim.encoders.color`` moved to ``maxsim.testing.color``. This re-export keeps old imports
working for one release; import from the new place."""

import warnings

from maxsim.testing.color import (  # noqa: F401
    PALETTE,
    ColorHistogramEncoder,
)

warnings.warn(
    "maxsim.encoders.color is deprecated: import from maxsim.testing.color",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "ColorHistogramEncoder",
    "PALETTE",
]
