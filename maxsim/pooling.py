"""Token reduction at ingest: fewer vectors per segment, so fewer bytes to store and to score.

Two reductions, applied in this order by :func:`reduce_tokens` and by :class:`PooledEncoder`:

- :func:`drop_duplicate_tokens`: a token of frame ``f`` is dropped when a token kept for an earlier frame
  (still "active": kept in frame ``f - 1`` or standing in for a token dropped there) has cosine similarity
  >= ``threshold`` with it. Every dropped token therefore has a kept stand-in at cosine >= ``threshold``,
  which bounds what any query token can lose: ``max_j <q, s_j>`` drops by at most
  ``sqrt(2 - 2 * threshold)`` for a unit query token.
- :func:`pool_tokens`: hierarchical (Ward) clustering of a segment's tokens into ``ceil(n / factor)``
  clusters, each replaced by its re-normalised mean (the token pooling of ColPali-style retrievers).
  Clustering runs over windows of at most ``window`` consecutive tokens, which bounds its O(n^2) cost and
  keeps each pooled token local in time. Pooled tokens are emitted ordered by the mean position of their
  members, so a segment's tokens stay in (approximate) frame order.

Queries are never reduced: :class:`PooledEncoder` passes texts through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from maxsim.types import Clip, Encoder, FrameSize


def _frame_bounds(n_tokens: int, n_frames: int) -> np.ndarray:
    """Token offsets ``(n_frames + 1,)`` of each frame, tokens split as evenly as possible in order."""
    n_frames = max(1, min(int(n_frames), n_tokens)) if n_tokens else 1
    return np.linspace(0, n_tokens, n_frames + 1).round().astype(np.int64)


def drop_duplicate_tokens(
    tokens: torch.Tensor, n_frames: int, threshold: float = 0.95
) -> tuple[torch.Tensor, np.ndarray]:
    """Drop tokens that nearly repeat a token kept for the previous frame.

    ``tokens`` is ``(n, dim)``, L2-normalised rows in frame order, split evenly over ``n_frames`` frames.
    Returns the kept tokens (in their original order) and their indices into ``tokens``. The first frame
    is always kept whole; ``threshold >= 1`` keeps everything.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n, dim), got shape {tuple(tokens.shape)}")
    if not 0.0 < threshold:
        raise ValueError(f"dedup threshold must be a cosine in (0, 1], got {threshold!r}")
    n = tokens.shape[0]
    if n == 0 or threshold >= 1.0 or n_frames <= 1:
        return tokens, np.arange(n)
    x = tokens.detach().float().cpu()
    bounds = _frame_bounds(n, n_frames)
    kept: list[np.ndarray] = [np.arange(bounds[0], bounds[1])]
    active = kept[0]  # indices of tokens that stand for the previous frame
    for f in range(1, bounds.size - 1):
        idx = np.arange(bounds[f], bounds[f + 1])
        if idx.size == 0:
            continue
        sim = x[idx] @ x[active].T  # (frame tokens, active tokens)
        best, arg = sim.max(1)
        dup = (best >= threshold).numpy()
        new = idx[~dup]
        kept.append(new)
        # the stand-ins of dropped tokens stay active; kept tokens become active
        active = np.unique(np.concatenate([new, active[arg.numpy()[dup]]]))
    keep = np.concatenate(kept)
    return tokens[torch.from_numpy(keep)], keep


def pool_tokens(
    tokens: torch.Tensor, factor: float = 2.0, window: int = 1024
) -> tuple[torch.Tensor, np.ndarray]:
    """Pool ``(n, dim)`` tokens to ``ceil(n / factor)`` by Ward clustering in windows of ``window`` tokens.

    Returns the pooled, L2-normalised tokens (float32, ordered by the mean position of their members)
    and, for every input token, the index of the pooled token it went into. ``factor <= 1`` returns the
    tokens unchanged.
    """
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('token pooling needs SciPy: pip install "maxsim[scale]"') from e

    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n, dim), got shape {tuple(tokens.shape)}")
    if not math.isfinite(factor) or factor < 1:
        raise ValueError(f"pooling factor must be >= 1, got {factor!r}")
    if window < 2:
        raise ValueError(f"pooling window must be at least 2 tokens, got {window!r}")
    n = tokens.shape[0]
    if factor == 1 or n <= 1:
        return tokens.detach().float().cpu(), np.arange(n)
    x = tokens.detach().cpu().double().numpy()
    labels = np.empty(n, dtype=np.int64)
    n_windows = math.ceil(n / window)
    next_label = 0
    for w in range(n_windows):
        lo, hi = n * w // n_windows, n * (w + 1) // n_windows
        m = hi - lo
        k = max(1, math.ceil(m / factor))
        if k >= m:
            labels[lo:hi] = next_label + np.arange(m)
        else:
            z = linkage(x[lo:hi], method="ward")
            lab = fcluster(z, t=k, criterion="maxclust") - 1
            labels[lo:hi] = next_label + lab
        next_label = int(labels[lo:hi].max()) + 1
    # compact labels, order clusters by the mean position of their members
    uniq, inv = np.unique(labels, return_inverse=True)
    counts = np.bincount(inv, minlength=uniq.size)
    mean_pos = np.bincount(inv, weights=np.arange(n), minlength=uniq.size) / counts
    order = np.argsort(mean_pos, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    assign = rank[inv]
    sums = torch.zeros(uniq.size, tokens.shape[1], dtype=torch.float64)
    sums.index_add_(0, torch.from_numpy(assign), torch.from_numpy(x))
    pooled = torch.nn.functional.normalize(sums, dim=1).float()
    return pooled, assign


def reduce_tokens(
    tokens: torch.Tensor, n_frames: int, factor: float = 1.0, dedup: float | None = None, window: int = 1024
) -> torch.Tensor:
    """A segment's tokens after duplicate dropping (when ``dedup`` is a cosine) then pooling by ``factor``."""
    if dedup is not None:
        tokens, _ = drop_duplicate_tokens(tokens, n_frames, dedup)
    if factor > 1:
        tokens, _ = pool_tokens(tokens, factor, window)
    return tokens


def _fmt(x: float) -> str:
    """``x`` as a name shows it: ``%g`` (``2``, ``0.95``) when that reads back exactly, else ``repr``."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


POOL_KEYS = ("factor", "dedup", "window")
_POOL_OPEN = "+pool("
_POOL_EXAMPLE = "colqwen3+pool(factor=2,dedup=0.95,window=1024)"


def pool_suffix(factor: float = 2.0, dedup: float | None = 0.95, window: int = 1024) -> str:
    """The ``"+pool(factor=F,dedup=D,window=W)"`` that ends the name and spec of a :class:`PooledEncoder`."""
    dd = "none" if dedup is None else _fmt(float(dedup))
    return f"{_POOL_OPEN}factor={_fmt(float(factor))},dedup={dd},window={int(window)})"


# what each +pool(...) setting must be, in the words of the errors
POOL_EXPECTED = {
    "factor": "a number >= 1 (the pooling factor, 1 = no pooling)",
    "dedup": "a cosine in (0, 1] or 'none'",
    "window": "a whole number of tokens >= 2",
}


def parse_pool_setting(key: str, text: str) -> float | int | None:
    """The value of token-reduction setting ``key`` (``factor``, ``dedup`` or ``window``) written as
    ``text``; ValueError whose message is what was expected (:data:`POOL_EXPECTED`)."""
    value: float | int | None
    if key == "dedup" and text.strip().lower() == "none":
        return None
    try:
        value = int(text) if key == "window" else float(text)
    except ValueError:
        raise ValueError(POOL_EXPECTED[key]) from None
    ok = {"factor": math.isfinite(value) and value >= 1, "dedup": 0.0 < value <= 1.0, "window": value >= 2}
    if not ok[key]:
        raise ValueError(POOL_EXPECTED[key])
    return value


def _pool_value(spec: str, key: str, text: str) -> float | int | None:
    """One ``key=value`` of a ``+pool(...)`` spec, checked; ValueError naming the spec, key and value."""
    try:
        return parse_pool_setting(key, text)
    except ValueError as e:
        raise ValueError(f"encoder spec {spec!r}: {key}={text!r} is not {e}") from None


def split_pool_spec(spec: str) -> tuple[str, dict[str, Any]] | None:
    """Split ``"<inner spec>+pool(factor=2,dedup=0.95,window=1024)"`` into the inner spec and the
    :class:`PooledEncoder` keyword arguments (keys left out take its defaults; ``dedup=none`` turns
    duplicate dropping off). None when ``spec`` has no ``+pool(``.

    The split is at the last ``+pool(``, which must be closed by the ``)`` that ends the spec, so the inner
    spec may be anything :func:`maxsim.encoders.load_encoder` takes (``NAME:CHECKPOINT``, a path, even
    another ``+pool(...)``). A malformed spec raises ValueError naming the spec, the key or value at fault
    and what was expected.
    """
    inner, sep, body = spec.rpartition(_POOL_OPEN)
    if not sep:
        return None
    inner = inner.strip()
    body = body.rstrip()
    if not body.endswith(")"):
        raise ValueError(
            f"encoder spec {spec!r}: '+pool(' must be closed by a ')' that ends the spec, "
            f"e.g. {_POOL_EXAMPLE!r}"
        )
    if not inner:
        raise ValueError(f"encoder spec {spec!r}: no encoder before '+pool(', e.g. {_POOL_EXAMPLE!r}")
    args = body[:-1]
    if "(" in args or ")" in args:
        raise ValueError(
            f"encoder spec {spec!r}: unexpected parenthesis in '+pool({args})'; expected "
            f"comma-separated key=value of {', '.join(POOL_KEYS)}"
        )
    out: dict[str, Any] = {"factor": 2.0, "dedup": 0.95, "window": 1024}
    seen: set[str] = set()
    for item in args.split(",") if args.strip() else []:
        key, eq, text = (s.strip() for s in item.partition("="))
        key = key.lower()
        if not eq or not key or not text:
            raise ValueError(
                f"encoder spec {spec!r}: {item.strip()!r} is not key=value; expected comma-separated "
                f"key=value of {', '.join(POOL_KEYS)}, e.g. {_POOL_EXAMPLE!r}"
            )
        if key not in POOL_KEYS:
            raise ValueError(
                f"encoder spec {spec!r}: unknown key {key!r} in '+pool(...)'; expected "
                f"{', '.join(POOL_KEYS)}"
            )
        if key in seen:
            raise ValueError(f"encoder spec {spec!r}: {key!r} is given twice in '+pool(...)'")
        seen.add(key)
        out[key] = _pool_value(spec, key, text)
    return inner, out


class PooledEncoder:
    """An encoder whose clip tokens are reduced at ingest (duplicates across frames dropped, then pooled).

    ``PooledEncoder(encoder, factor=2, dedup=0.95)`` wraps any :class:`~maxsim.types.Encoder`, or the
    encoder a spec names (``PooledEncoder("colqwen3", factor=2)``). Its ``name`` records the settings
    (``"<inner>+pool(factor=2,dedup=0.95,window=1024)"``), so an index built with one setting refuses an
    encoder with another. Texts are encoded unchanged.

    ``spec`` is the spec that loads this same encoder again (``"<inner spec>+pool(...)"``, the syntax of
    :func:`split_pool_spec`), or None when the inner encoder was given as an object: an
    :class:`~maxsim.engine.Engine` records it, so the index reopens without ``encoder=``.
    ``load_encoder("colqwen3+pool(factor=2)")`` builds one from its spec.
    """

    def __init__(
        self, encoder: Encoder | str, factor: float = 2.0, dedup: float | None = 0.95, window: int = 1024
    ) -> None:
        if not math.isfinite(factor) or factor < 1:
            raise ValueError(f"PooledEncoder: factor must be >= 1, got {factor!r}")
        if dedup is not None and not 0.0 < dedup <= 1.0:
            raise ValueError(f"PooledEncoder: dedup must be a cosine in (0, 1] or None, got {dedup!r}")
        if window < 2:
            raise ValueError(f"PooledEncoder: window must be at least 2 tokens, got {window!r}")
        inner_spec: str | None = None
        if isinstance(encoder, str):
            from maxsim.encoders import load_encoder

            inner_spec = encoder
            encoder = load_encoder(encoder)
        elif isinstance(encoder, PooledEncoder):
            inner_spec = encoder.spec
        self.inner = encoder
        self.inner_spec = inner_spec  # the spec that loads ``inner``, when known
        self.factor = float(factor)
        self.dedup = None if dedup is None else float(dedup)
        self.window = int(window)
        self.dim = encoder.dim
        self.name = f"{encoder.name}{pool_suffix(self.factor, self.dedup, self.window)}"

    @property
    def spec(self) -> str | None:
        """The spec that loads this encoder again (``"<inner spec>+pool(...)"``), None if not known."""
        if self.inner_spec is None:
            return None
        return f"{self.inner_spec}{pool_suffix(self.factor, self.dedup, self.window)}"

    @property
    def settings(self) -> dict[str, Any]:
        """The reduction settings, recorded in the index beside the encoder name."""
        inner = getattr(self.inner, "settings", None)
        out: dict[str, Any] = {"pool_factor": self.factor, "dedup": self.dedup, "pool_window": self.window}
        if inner:
            out["inner"] = inner
        return out

    def frame_size(self, n_frames: int) -> FrameSize | None:
        """The frame size the inner encoder wants (None when it has no preference)."""
        method = getattr(self.inner, "frame_size", None)
        return None if method is None else method(n_frames)

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return self.inner.encode_texts(texts)

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        vecs = self.inner.encode_clips(clips)
        if len(vecs) != len(clips):
            return list(vecs)  # let the engine report the inner encoder's mistake
        out = []
        for clip, v in zip(clips, vecs, strict=True):
            if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] == 0:
                out.append(v)
                continue
            out.append(reduce_tokens(v, len(clip.timestamps), self.factor, self.dedup, self.window))
        return out
