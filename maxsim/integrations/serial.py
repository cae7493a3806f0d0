"""One encoder call at a time: the wrapper that threads sharing an engine put around its encoder.

Models and tokenizers are not safe to call from two threads at once (ColQwen3's ``encode_texts`` sets
``tokenizer.padding_side`` per call, for one). The HTTP service (searches and ingest jobs on different
threads) and the retrievers (``ainvoke``/``aretrieve`` run searches on worker threads) route an engine's
encoder calls through one :class:`SerialEncoder` per engine. Only encoding is serialised: scoring and
everything else still run concurrently.
"""

from __future__ import annotations

import threading
from typing import Any

_INSTALL = threading.Lock()


class SerialEncoder:
    """An encoder whose ``encode_*`` calls hold one lock; everything else is the wrapped encoder's."""

    def __init__(self, inner: Any, lock: threading.Lock | None = None) -> None:
        self.inner = inner
        self.lock = lock if lock is not None else threading.Lock()

    def encode_texts(self, texts: Any) -> Any:
        with self.lock:
            return self.inner.encode_texts(texts)

    def encode_clips(self, clips: Any) -> Any:
        with self.lock:
            return self.inner.encode_clips(clips)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "lock"):  # not set yet (copy, unpickling): no recursion through self.inner
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if name.startswith("encode") and callable(attr):  # any other encode_* an engine may call

            def locked(*args: Any, **kwargs: Any) -> Any:
                with self.lock:
                    return attr(*args, **kwargs)

            return locked
        return attr

    def __repr__(self) -> str:
        return f"SerialEncoder({self.inner!r})"


def serialize_encoder(engine: Any) -> SerialEncoder | None:
    """Make ``engine`` (a :class:`~maxsim.Engine`) call its encoder through a :class:`SerialEncoder`,
    loading the encoder first if it has not yet; returns the wrapper (the same one on every call).
    Anything else with a ``search`` (no settable ``encoder``) is left alone: None."""
    if not hasattr(type(engine), "encoder") or not hasattr(engine, "encoder_loaded"):
        return None
    with _INSTALL:  # one wrapper (one lock) per engine, and one load of its model
        enc = engine.encoder
        if isinstance(enc, SerialEncoder):
            return enc
        wrapped = SerialEncoder(enc)
        engine.encoder = wrapped  # checked by the engine: the same name and dim as the index's
        if engine.encoder is not wrapped:
            raise RuntimeError(
                f"{type(engine).__name__} does not keep the encoder it is given: encoder calls cannot be "
                "serialised between threads"
            )
        return wrapped
