"""Cutting a video's timeline into segments: the contracts, and segmenters chosen by name.

A :class:`Segmenter` is a recipe (its ``name`` records the settings in the index); ``start()`` gives a
per-video run that is fed the frames of the single decode pass and returns the segments at ``finish``.
One module per implementation: :mod:`~maxsim.media.fixed` (``"fixed"``), :mod:`~maxsim.media.scenes`
(``"scenes"``, PySceneDetect); the timeline rules they share are in :mod:`~maxsim.media.spans`.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

from maxsim.media.fixed import FixedSegmenter
from maxsim.media.scenes import DETECTORS, SceneSegmenter
from maxsim.media.spans import fixed_segments, normalize_segments, run_segmenter
from maxsim.specs import import_attr, is_import_spec, parse_options
from maxsim.types import Segment


@runtime_checkable
class SegmenterRun(Protocol):
    """Segmentation state of one video: fed every decoded frame in time order, then finished.

    A run may also offer ``final_segments(t: float) -> list[Segment]``: the segments that can no longer
    change once the frames up to time ``t`` were decoded (fed), a growing prefix of what ``finish``
    returns. :func:`maxsim.media.iter_clips` then yields clips while decoding (see there).
    """

    def feed(self, t: float, frame_bgr: np.ndarray) -> None: ...

    def finish(self, duration: float) -> list[Segment]: ...


@runtime_checkable
class Segmenter(Protocol):
    """A segmentation recipe. ``name`` is a stable string with the settings (recorded in the index).

    When ``needs_frames`` is False a run may be fed no frame at all (only ``finish(duration)``).
    """

    @property
    def name(self) -> str: ...

    @property
    def needs_frames(self) -> bool: ...

    def start(self) -> SegmenterRun: ...

    def segment(self, path: str | os.PathLike) -> list[Segment]: ...


def load_segmenter(spec: str | Segmenter) -> Segmenter:
    """A segmenter from an instance or a spec string.

    Specs: ``"fixed"``, ``"fixed:SECONDS"``, ``"scenes"``, ``"scenes:DETECTOR"``, optionally followed by
    comma-separated options (``"scenes:content,threshold=30,max_seconds=15"``, ``"fixed:seconds=5"``),
    or ``"package.module:attr"`` naming a class or factory called with no arguments.
    """
    if not isinstance(spec, str):
        if all(hasattr(spec, a) for a in ("name", "needs_frames", "start")):
            return spec
        raise TypeError(f"not a segmenter (needs name, needs_frames and start()): {spec!r}")
    s = spec.strip()
    head, _, rest = s.partition(":")
    kind = head.strip().lower()
    what = f"segmenter spec {spec!r}"
    try:
        if kind == "fixed":
            args, kwargs = parse_options(rest, what)
            return FixedSegmenter(*args, **kwargs)
        if kind in ("scenes", "scene"):
            args, kwargs = parse_options(rest, what)
            return SceneSegmenter(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"invalid segmenter spec {spec!r}: {e}") from e
    if is_import_spec(s):
        obj = import_attr(s, "segmenter spec")
        seg = obj() if callable(obj) else obj
        return load_segmenter(seg)
    raise ValueError(
        f"unknown segmenter spec {spec!r}; expected 'fixed', 'fixed:SECONDS', 'scenes', 'scenes:DETECTOR' "
        f"(one of {sorted(DETECTORS)}), or 'package.module:attr'"
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
