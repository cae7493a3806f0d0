"""Deprecated: ``maxsim.video`` moved to ``maxsim.media.video``. This re-export keeps old imports working for
one release; import from the new place."""

import warnings

from maxsim.errors import (  # noqa: F401
    VideoError,
)
from maxsim.media.video import (  # noqa: F401
    DecodedFrames,
    VideoInfo,
    content_hash,
    iter_frames,
    probe,
)

warnings.warn(
    "maxsim.video is deprecated: import from maxsim.media.video",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "DecodedFrames",
    "VideoError",
    "VideoInfo",
    "content_hash",
    "iter_frames",
    "probe",
]
