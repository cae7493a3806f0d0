"""Encoder lookup: a registered name, a Hugging Face id or local folder, or ``package.module:attr``."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maxsim.types import Encoder

# name -> "module:attr" of a factory taking (id_or_path=None, **kwargs). Imported lazily so that naming an
# encoder never pulls in a heavy model library that is not used.
_REGISTRY: dict[str, str | Callable[..., Encoder]] = {}
# Hugging Face config ``model_type`` -> registered encoder name, for folders and hub ids.
_MODEL_TYPES: dict[str, str] = {}
# Encoder used for a hub id whose config cannot be read (offline) and for the CLI's default.
DEFAULT_ENCODER: str | None = "colqwen3"


def register_encoder(
    name: str, factory: str | Callable[..., Encoder], model_types: tuple[str, ...] = ()
) -> None:
    """Make ``factory`` (a callable or a ``"module:attr"`` string) loadable under ``name``."""
    _REGISTRY[name] = factory
    for mt in model_types:
        _MODEL_TYPES[mt] = name


def registered_encoders() -> list[str]:
    """Names accepted by :func:`load_encoder`."""
    return sorted(_REGISTRY)


def _import_attr(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"encoder {spec!r}: cannot import module {module!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ValueError(f"encoder {spec!r}: module {module!r} has no attribute {attr!r}") from e
    return obj


def _check(enc: Any, spec: str) -> Encoder:
    missing = [a for a in ("name", "dim", "encode_texts", "encode_clips") if not hasattr(enc, a)]
    if missing:
        raise TypeError(f"encoder {spec!r} gave {type(enc).__name__}, which lacks {', '.join(missing)}")
    return enc


def _model_type(path: Path) -> str | None:
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    return data.get("model_type")


def _hub_model_type(repo_id: str, kwargs: dict[str, Any] | None = None) -> str | None:
    """``model_type`` from a hub model's config.json, fetched with the loading arguments the model will
    get (revision, token, cache_dir, local_files_only; from the cache when offline); None when unknown."""
    try:
        from huggingface_hub import hf_hub_download

        from maxsim.encoders.checkpoint import hub_offline

        kwargs = kwargs or {}
        extra = {key: kwargs[key] for key in ("token", "cache_dir") if kwargs.get(key) is not None}
        offline = bool(kwargs.get("local_files_only")) or hub_offline()
        path = hf_hub_download(repo_id, "config.json", revision=kwargs.get("revision"),
                               local_files_only=offline, **extra)
    except Exception:  # noqa: BLE001 - any failure means "unknown": the default encoder reports it
        return None
    return _model_type(Path(path).parent)


def _load_pooled(spec: str, kwargs: dict[str, Any]) -> Encoder:
    """``"<inner spec>+pool(...)"``: the inner encoder (loaded with ``kwargs``) in a PooledEncoder."""
    from maxsim.pooling import PooledEncoder, split_pool_spec

    split = split_pool_spec(spec)
    assert split is not None  # the caller saw "+pool("
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
    return _check(enc, spec)


def load_encoder(spec: str | Encoder, **kwargs: Any) -> Encoder:
    """Resolve an encoder spec to an encoder instance.

    ``spec`` is an encoder instance (returned as is), a registered name (``load_encoder("colqwen3")``),
    a registered name with its checkpoint (``"colqwen3-cpu:/models/tomoro-4b"``: the name's settings,
    that hub id or folder), ``package.module:attr`` (a class or factory called with ``kwargs``, or an
    encoder instance), or a Hugging Face hub id / local model folder, dispatched on its config's
    ``model_type``.

    Any of these followed by ``+pool(factor=2,dedup=0.95,window=1024)`` (keys optional, defaults as
    :class:`~maxsim.pooling.PooledEncoder`; ``dedup=none`` turns duplicate dropping off) is that encoder,
    loaded with ``kwargs``, in a :class:`~maxsim.pooling.PooledEncoder` (token reduction at ingest).
    """
    if not isinstance(spec, str):
        return _check(spec, type(spec).__name__)
    if "+pool(" in spec and not Path(spec).expanduser().exists():
        return _load_pooled(spec, kwargs)
    name, sep, checkpoint = spec.partition(":")
    if spec in _REGISTRY or (sep and name in _REGISTRY and checkpoint):
        factory = _REGISTRY[name if sep else spec]
        if isinstance(factory, str):
            factory = _import_attr(factory)
        if sep:
            kwargs = {"id_or_path": checkpoint, **kwargs}
        return _check(factory(**kwargs), spec)
    if ":" in spec and not os.path.exists(spec):
        obj = _import_attr(spec)
        # a class (encoder class or not) or a factory is called with kwargs; an encoder instance is used
        # as it is
        callable_ = isinstance(obj, type) or (callable(obj) and not hasattr(obj, "encode_texts"))
        enc = obj(**kwargs) if callable_ else obj
        if isinstance(enc, type):  # a factory that returned a class
            enc = enc()
        return _check(enc, spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        mt = _model_type(path)
        name = _MODEL_TYPES.get(mt or "", DEFAULT_ENCODER)
        if name is None:
            raise ValueError(
                f"encoder folder {str(path)!r} has model_type {mt!r}, which no registered encoder "
                f"handles (known: {sorted(_MODEL_TYPES) or 'none'})"
            )
        return load_encoder(name, id_or_path=str(path), **kwargs)
    if "/" in spec and not spec.startswith((".", "/", "~")):
        name = _MODEL_TYPES.get(_hub_model_type(spec, kwargs) or "", DEFAULT_ENCODER)
        if name is None:
            raise ValueError(
                f"encoder {spec!r} looks like a Hugging Face id, but no model encoder is registered"
            )
        return load_encoder(name, id_or_path=spec, **kwargs)
    raise ValueError(
        f"unknown encoder {spec!r}: expected a registered name "
        f"({', '.join(registered_encoders()) or 'none'}), a Hugging Face id or local folder, "
        "or package.module:attr"
    )


# Built-in model encoders, imported only when used (importing maxsim never imports transformers).
register_encoder("colqwen3", "maxsim.encoders.colqwen3:load", model_types=("colqwen3",))
register_encoder("colqwen3-cpu", "maxsim.encoders.colqwen3:load_cpu")  # fewer, smaller frames per clip
register_encoder("colqwen2", "maxsim.encoders.colqwen2:load", model_types=("colqwen2",))
# One vector per segment from Qwen3-VL-Embedding (native Qwen3-VL checkpoint folders and ids come here).
register_encoder("qwen3-vl-embedding", "maxsim.encoders.qwen3vl_embedding:load", model_types=("qwen3_vl",))
register_encoder("qwen3-vl-embedding-frames", "maxsim.encoders.qwen3vl_embedding:load_frames")  # per pair
# One vector per frame: SigLIP / SigLIP 2 (default google/siglip2-base-patch16-224) and CLIP.
register_encoder("siglip", "maxsim.encoders.clip:load_siglip", model_types=("siglip", "siglip2"))
register_encoder("clip", "maxsim.encoders.clip:load_clip", model_types=("clip",))

# Deterministic colour encoder for tests and the synthetic benchmark (not a model; no weights).
register_encoder("color-test", "maxsim.encoders.color:ColorHistogramEncoder")
