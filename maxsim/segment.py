"""Deprecated: ``maxsim.segment`` moved to ``maxsim.media.segment``. This re-export keeps old imports working
for one release; import from the new place."""

import warnings

from maxsim.media.segment import (  # noqa: F401
    DETECTORS,
    FixedSegmenter,
    SceneSegmenter,
    Segmenter,
    SegmenterRun,
    fixed_segments,
    load_segmenter,
    normalize_segments,
    run_segmenter,
)
from maxsim.types import (  # noqa: F401
    Segment,
)

warnings.warn(
    "maxsim.segment is deprecated: import from maxsim.media.segment",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "DETECTORS",
    "FixedSegmenter",
    "SceneSegmenter",
    "Segment",
    "Segmenter",
    "SegmenterRun",
    "fixed_segments",
    "load_segmenter",
    "normalize_segments",
    "run_segmenter",
]
