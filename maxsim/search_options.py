"""Search options beyond k and the filters: exact or pruned search, the pruned search's knobs, and how many
of the best hits a reranker re-scores.

The names are those of :meth:`maxsim.Engine.search`'s keyword options (``mode``, ``n_candidates``,
``n_refine``, ``nprobe``, ``rerank``); the HTTP service and the RAG retrievers check what they are given with
:func:`check_search_options` before it reaches the engine, so a typo is refused up front instead of
surfacing as a TypeError deep in a search (or, for a knob without ``mode="pruned"``, silently ignored).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

MODES = ("exact", "pruned")
PRUNED_KEYS = ("n_candidates", "n_refine", "nprobe")
OPTION_KEYS = ("mode", *PRUNED_KEYS, "rerank")

# Bounds of the pruned search's knobs. Values past the index size only make a pruned search as slow as
# an exact one; the upper bounds refuse nonsense (a mistyped 1e12) rather than any real index.
MAX_CANDIDATES = 100_000_000
MAX_REFINE = 1_000_000_000
MAX_NPROBE = 65_536
MAX_RERANK = 1000  # a vision-language reranker takes about a second a hit on a GPU
BOUNDS = {"n_candidates": (1, MAX_CANDIDATES), "n_refine": (0, MAX_REFINE), "nprobe": (1, MAX_NPROBE),
          "rerank": (0, MAX_RERANK)}


def check_search_options(options: Mapping[str, Any] | None, what: str = "search_options") -> dict[str, Any]:
    """A checked copy of ``options``, ready for ``engine.search(..., **options)``.

    Keys must be among :data:`OPTION_KEYS`; ``mode`` is ``"exact"`` or ``"pruned"``; ``n_candidates``
    (>= 1), ``n_refine`` (>= 0; 0 skips the residual stage) and ``nprobe`` (>= 1) are integers within
    :data:`BOUNDS`, and only allowed with ``mode="pruned"``; ``rerank`` (0 to :data:`MAX_RERANK`: the best
    hits re-scored by the engine's reranker, 0 none) goes with either mode. A None value means "the
    engine's default" and is dropped. Raises TypeError (not a mapping) or ValueError naming ``what`` and
    the offending key.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"{what} must be a dict of search options, got {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in OPTION_KEYS)
    if unknown:
        raise ValueError(
            f"{what}: unknown search option(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(OPTION_KEYS)}"
        )
    out: dict[str, Any] = {}
    mode = options.get("mode")
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"{what}: mode must be 'exact' or 'pruned', got {mode!r}")
        out["mode"] = mode
    for key in (*PRUNED_KEYS, "rerank"):
        value = options.get(key)
        if value is None:
            continue
        lo, hi = BOUNDS[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
            raise ValueError(f"{what}: {key} must be an integer from {lo} to {hi}, got {value!r}")
        out[key] = int(value)
    knobs = [key for key in PRUNED_KEYS if key in out]
    if knobs and out.get("mode") != "pruned":
        raise ValueError(
            f"{what}: {', '.join(knobs)} only apply to pruned search; add 'mode': 'pruned' "
            f"(got mode {out.get('mode', 'exact')!r})"
        )
    return out
