"""Token reduction at ingest as an encoder: :class:`PooledEncoder` wraps any encoder and reduces each
clip's tokens (:mod:`maxsim.encoders.reduce`); its spec is ``"<inner spec>+pool(...)"``
(:mod:`maxsim.encoders.spec`), which :func:`~maxsim.encoders.load_encoder` understands once this module
is imported (it registers the ``+pool(`` wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from maxsim.encoders.record import encoder_frame_size, encoder_revision
from maxsim.encoders.reduce import reduce_tokens
from maxsim.encoders.registry import load_encoder, register_wrapper
from maxsim.encoders.spec import POOL_OPEN, pool_suffix, split_pool_spec
from maxsim.types import Clip, Encoder, FrameSize


class PooledEncoder:
    """An encoder whose clip tokens are reduced at ingest (duplicates across frames dropped, then pooled).

    ``PooledEncoder(encoder, factor=2, dedup=0.95)`` wraps any :class:`~maxsim.types.Encoder`, or the
    encoder a spec names (``PooledEncoder("colqwen3", factor=2)``). Its ``name`` records the settings
    (``"<inner>+pool(factor=2,dedup=0.95,window=1024)"``), so an index built with one setting refuses an
    encoder with another. Texts are encoded unchanged.

    ``spec`` is the spec that loads this same encoder again (``"<inner spec>+pool(...)"``, the syntax of
    :func:`split_pool_spec`), or None when the inner encoder was given as an object: an
    :class:`~maxsim.Engine` records it, so the index reopens without ``encoder=``.
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
    def revision(self) -> str | None:
        """The hub commit the inner encoder's weights were loaded at (None when unknown)."""
        return encoder_revision(self.inner)

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
        return encoder_frame_size(self.inner, n_frames)

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return self.inner.encode_texts(texts)

    def token_labels(self, text: str) -> list[str]:
        """The inner encoder's query token labels (queries are not reduced); none when it has none.
        There is no ``token_grid``: pooled tokens have lost their positions."""
        labels = getattr(self.inner, "token_labels", None)
        return [] if labels is None else list(labels(text))

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


def load_pooled(spec: str, kwargs: dict[str, Any]) -> PooledEncoder:
    """``"<inner spec>+pool(...)"``: the inner encoder (loaded with ``kwargs``) in a PooledEncoder."""
    split = split_pool_spec(spec)
    if split is None:
        raise ValueError(f"encoder spec {spec!r} has no '+pool(...)'")
    inner_spec, settings = split
    try:
        inner = load_encoder(inner_spec, **kwargs)
    except ValueError as e:
        raise ValueError(f"encoder spec {spec!r}: {e}") from e
    enc = PooledEncoder(inner, **settings)
    # Its spec (what an index records) is known when kwargs change nothing the spec leaves out: a hub
    # revision is recorded beside the spec and given back on reload.
    if set(kwargs) <= {"revision"}:
        enc.inner_spec = inner.spec if isinstance(inner, PooledEncoder) else inner_spec
    return enc


register_wrapper(POOL_OPEN, load_pooled)
