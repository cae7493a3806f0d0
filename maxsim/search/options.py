"""One search request, typed and checked once: :class:`SearchOptions` (which hits, how they are searched,
and how many of the best a reranker re-scores afterwards).

Every front end (``Engine.search`` and its batch and vector forms, the HTTP service, the RAG retrievers,
``ShardedSearch``, the CLI) builds a :class:`SearchOptions` and passes it down whole; nothing below checks
again. A bad value is a ``ValueError`` (``TypeError`` for a wrong type) naming the option and what was
expected, raised before anything is searched.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MODES = ("exact", "pruned")
PRUNED_KEYS = ("n_candidates", "n_refine", "nprobe")
CHANNELS = ("visual", "transcript")
FUSIONS = ("weighted", "rrf")  # see maxsim.transcripts.fusion
DEFAULT_TRANSCRIPT_WEIGHT = 0.5
CHANNEL_KEYS = ("channels", "fusion", "transcript_weight")
OPTION_KEYS = ("mode", *PRUNED_KEYS, "rerank", *CHANNEL_KEYS)

# Bounds of the pruned search's knobs. Values past the index size only make a pruned search as slow as
# an exact one; the upper bounds refuse nonsense (a mistyped 1e12) rather than any real index.
MAX_CANDIDATES = 100_000_000
MAX_REFINE = 1_000_000_000
MAX_NPROBE = 65_536
MAX_RERANK = 1000  # a vision-language reranker takes about a second a hit on a GPU
BOUNDS = {"n_candidates": (1, MAX_CANDIDATES), "n_refine": (0, MAX_REFINE), "nprobe": (1, MAX_NPROBE),
          "rerank": (0, MAX_RERANK)}
MAX_K = 1_000_000_000  # k beyond the live segments is cut to them; this refuses nonsense
DEFAULT_NPROBE = 8


def default_candidates(k: int, n_allowed: int) -> int:
    """Candidates re-ranked exactly by a pruned search by default: 0.1% of the segments, at least 100 x k."""
    return max(100 * k, n_allowed // 1000)


def default_refine(k: int, n_allowed: int) -> int:
    """Segments scored from residual codes by a pruned search by default: 10% of the segments, at least
    1000 x k."""
    return max(1000 * k, n_allowed // 10)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= int(value) <= hi:
        raise ValueError(f"{what} must be an integer from {lo} to {hi}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SearchOptions:
    """What to search for besides the query: how many hits, which segments, and how.

    - ``k``: hits per query (cut to the segments searched when there are fewer).
    - ``videos``: only these videos (paths as given or indexed; None: all).
    - ``time_range``: only segments overlapping ``(start, end)`` seconds.
    - ``thumbnails``: read each hit's JPEG thumbnail (False leaves ``Hit.thumbnail`` None).
    - ``mode``: ``"exact"`` scores every segment; ``"pruned"`` scores exactly ``n_candidates`` segments
      picked through the prune index (``n_refine`` scored from residual codes first, ``nprobe`` centroids
      probed per query token; None: the defaults, see :func:`default_candidates`, :func:`default_refine`,
      :data:`DEFAULT_NPROBE`). The pruning knobs are refused for an exact search.
    - ``rerank``: re-score the best ``rerank`` hits (at least ``k``) with the engine's reranker, which
      sees the query and each segment's frames decoded again from its video, and keep the best ``k`` by
      its score (0: no re-ranking; at most :data:`MAX_RERANK`). Runs after either mode, on the query text
      (searches by vectors cannot re-rank).
    - ``channels``: what is matched: ``("visual",)`` the frames, ``("transcript",)`` what is said (the
      index's transcript lines), both fused (None: both when the index has transcripts, else visual).
    - ``fusion``: how two channels' scores become one, ``"weighted"`` (min-max normalised scores added
      with weights ``1 - transcript_weight`` and ``transcript_weight``) or ``"rrf"`` (reciprocal rank
      fusion with the same weights); see :mod:`maxsim.transcripts.fusion`.
    """

    k: int = 10
    videos: tuple[str, ...] | None = None
    time_range: tuple[float, float] | None = None
    thumbnails: bool = True
    mode: str = "exact"
    n_candidates: int | None = None
    n_refine: int | None = None
    nprobe: int | None = None
    rerank: int = 0
    channels: tuple[str, ...] | None = None
    fusion: str = "weighted"
    transcript_weight: float = DEFAULT_TRANSCRIPT_WEIGHT

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "k", _int(self.k, "k", 1, MAX_K))
        if self.videos is not None:
            vids = self.videos
            if isinstance(vids, (str, bytes)) or not isinstance(vids, Iterable):
                vids = [vids]
            vids = tuple(str(v) for v in vids)
            set_(self, "videos", vids)
        if self.time_range is not None:
            try:
                lo, hi = (float(x) for x in self.time_range)
            except (TypeError, ValueError):
                raise TypeError(
                    f"time_range must be (start, end) in seconds, got {self.time_range!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"time_range must be finite seconds, got {self.time_range!r}")
            if hi < lo:
                raise ValueError(f"time_range end {hi} is before its start {lo}")
            set_(self, "time_range", (lo, hi))
        set_(self, "thumbnails", bool(self.thumbnails))
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'exact' or 'pruned', got {self.mode!r}")
        for key in PRUNED_KEYS:
            value = getattr(self, key)
            if value is not None:
                lo, hi = BOUNDS[key]
                set_(self, key, _int(value, key, lo, hi))
        knobs = [key for key in PRUNED_KEYS if getattr(self, key) is not None]
        if knobs and self.mode != "pruned":
            raise ValueError(
                f"{', '.join(knobs)} only {'applies' if len(knobs) == 1 else 'apply'} to pruned search; "
                f"add mode='pruned' (got mode {self.mode!r})"
            )
        set_(self, "rerank", _int(self.rerank, "rerank", *BOUNDS["rerank"]))
        if self.channels is not None:
            ch = [self.channels] if isinstance(self.channels, str) else self.channels
            if not isinstance(ch, Iterable) or not (ch := tuple(ch)) or len(set(ch)) != len(ch) or any(
                    c not in CHANNELS for c in ch):
                raise ValueError(f"channels must be some of {', '.join(CHANNELS)} (each once), "
                                 f"got {self.channels!r}")
            set_(self, "channels", tuple(c for c in CHANNELS if c in ch))
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be 'weighted' or 'rrf', got {self.fusion!r}")
        w = self.transcript_weight
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"transcript_weight must be a number from 0 to 1, got {w!r}")
        set_(self, "transcript_weight", float(w))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None, what: str = "search_options",
                     **base: Any) -> SearchOptions:
        """Options from a dict of search options (``mode``, ``n_candidates``, ``n_refine``, ``nprobe``,
        ``rerank``; None values mean "the default") over ``base`` (``k``, filters): how the HTTP service
        and the retrievers take theirs. Errors name ``what``."""
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise TypeError(f"{what} must be a dict of search options, got {type(options).__name__}")
        unknown = sorted(str(key) for key in options if key not in OPTION_KEYS)
        if unknown:
            raise ValueError(
                f"{what}: unknown search option(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(OPTION_KEYS)}"
            )
        given = {key: value for key, value in options.items() if value is not None}
        try:
            return cls(**{**base, **given})
        except (TypeError, ValueError) as e:
            raise type(e)(f"{what}: {e}") from None

    @classmethod
    def of(cls, options: SearchOptions | None, **changes: Any) -> SearchOptions:
        """``options`` (or the defaults when None) with keyword ``changes`` applied: how the engine takes
        ``query(text, options, k=5)``."""
        if options is None:
            return cls(**changes)
        if not isinstance(options, SearchOptions):
            raise TypeError(f"options must be a SearchOptions, got {type(options).__name__}")
        return options.replace(**changes) if changes else options

    def replace(self, **changes: Any) -> SearchOptions:
        """A copy with some options changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def knobs(self) -> dict[str, Any]:
        """The search options beyond k and the filters (``mode``, the pruning knobs set, ``rerank`` when
        it is on), as a dict."""
        out: dict[str, Any] = {"mode": self.mode}
        out.update({key: getattr(self, key) for key in PRUNED_KEYS if getattr(self, key) is not None})
        if self.rerank:
            out["rerank"] = self.rerank
        if self.channels is not None:
            out["channels"] = list(self.channels)
        if self.fusion != "weighted":
            out["fusion"] = self.fusion
        if self.transcript_weight != DEFAULT_TRANSCRIPT_WEIGHT:
            out["transcript_weight"] = self.transcript_weight
        return out

    def first_stage(self) -> SearchOptions:
        """The options of the search a re-ranked one starts with: ``k`` widened to the hits the reranker
        re-scores, no re-ranking. Itself when ``rerank`` is 0."""
        if not self.rerank:
            return self
        return self.replace(k=max(self.k, self.rerank), rerank=0)


def check_search_options(options: Mapping[str, Any] | None, what: str = "search_options") -> dict[str, Any]:
    """A checked copy of a dict of search options (``mode``, ``n_candidates``, ``n_refine``, ``nprobe``,
    ``rerank``; None values and ``rerank=0`` dropped), as :meth:`SearchOptions.from_mapping` checks them."""
    opts = SearchOptions.from_mapping(options, what)
    out = opts.knobs()
    if (options or {}).get("mode") is None:
        out.pop("mode")
    return out
