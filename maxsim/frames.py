"""Deprecated: ``maxsim.frames`` moved to ``maxsim.media``. This re-export keeps old imports working for one
release; import from the new place."""

import warnings

from maxsim.media.clips import (  # noqa: F401
    iter_clips,
)
from maxsim.media.frames import (  # noqa: F401
    FrameSampler,
    SampleRun,
    jpeg_thumbnail,
)

warnings.warn(
    "maxsim.frames is deprecated: import from maxsim.media",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "FrameSampler",
    "SampleRun",
    "iter_clips",
    "jpeg_thumbnail",
]
