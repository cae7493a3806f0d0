"""Encoder lookup: a registered name, a Hugging Face id or local folder, or ``package.module:attr``.

Wrappers that extend the spec syntax (token reduction's ``"<spec>+pool(...)"``) register a loader for
their marker with :func:`register_wrapper`, so that this module needs no import of them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maxsim.encoders.checkpoint import hub_offline
from maxsim.encoders.spec import strip_pool_suffix
from maxsim.specs import import_attr
from maxsim.types import Encoder

# name -> "module:attr" of a factory taking (id_or_path=None, **kwargs). Imported lazily so that naming an
# encoder never pulls in a heavy model library that is not used.
_REGISTRY: dict[str, str | Callable[..., Encoder]] = {}
# Hugging Face config ``model_type`` -> registered encoder name, for folders and hub ids.
_MODEL_TYPES: dict[str, str] = {}
# registered name -> the family its encoders' names start with (``family:checkpoint@revision``)
_FAMILIES: dict[str, str] = {}
# spec markers (e.g. "+pool(") -> loader(spec, kwargs) of the wrapper they name
_WRAPPERS: dict[str, Callable[[str, dict[str, Any]], Encoder]] = {}
# Encoder used for a hub id whose config cannot be read (offline) and for the CLI's default.
DEFAULT_ENCODER: str | None = "colqwen3"


def register_encoder(
    name: str, factory: str | Callable[..., Encoder], model_types: tuple[str, ...] = (),
    family: str | None = None,
) -> None:
    """Make ``factory`` (a callable or a ``"module:attr"`` string) loadable under ``name``.

    ``family`` is what the names of its encoders start with (``family:checkpoint@revision``; default
    ``name``): it lets an index's recorded encoder be compared with a spec before any weight is loaded.
    """
    _REGISTRY[name] = factory
    _FAMILIES[name] = family or name
    for mt in model_types:
        _MODEL_TYPES[mt] = name


def unregister_encoder(name: str) -> None:
    """Forget a registered name (and the config model types that dispatched to it)."""
    _REGISTRY.pop(name, None)
    _FAMILIES.pop(name, None)
    for mt in [mt for mt, n in _MODEL_TYPES.items() if n == name]:
        del _MODEL_TYPES[mt]


def register_wrapper(marker: str, loader: Callable[[str, dict[str, Any]], Encoder]) -> None:
    """Make specs containing ``marker`` (that are not existing paths) load through ``loader(spec,
    kwargs)``: how a wrapper such as token reduction (``"+pool("``) extends the spec syntax."""
    _WRAPPERS[marker] = loader


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered encoder name."""
    return name in _REGISTRY


def name_family(name: str) -> str:
    """The family of an encoder name as an index records it: ``colqwen3`` for
    ``colqwen3:TomoroAI/tomoro-colqwen3-embed-4b@<commit>``, the name itself when it has no ``:``. Token
    reduction (``+pool(...)``) is left out."""
    return strip_pool_suffix(str(name)).split(":", 1)[0]


def encoder_family(spec: str) -> str | None:
    """The family of the encoder a spec would load, told without loading any weight: from the registry
    for registered names (``colqwen3-cpu:/models/x`` is ``colqwen3``), from ``config.json`` for local
    folders and for hub ids already in the local cache. None when it cannot be told this cheaply
    (``package.module:attr``, a hub id not cached yet)."""
    try:
        spec = strip_pool_suffix(str(spec))
    except ValueError:
        return None
    name, sep, checkpoint = spec.partition(":")
    if spec in _REGISTRY or (sep and name in _REGISTRY and checkpoint):
        return _FAMILIES.get(name if sep else spec)
    path = Path(spec).expanduser()
    with contextlib.suppress(OSError):
        if path.is_dir():
            reg = _MODEL_TYPES.get(_model_type(path) or "")
            return _FAMILIES.get(reg) if reg else None
    if "/" in spec and ":" not in spec and not spec.startswith((".", "/", "~")):
        reg = _MODEL_TYPES.get(hub_model_type(spec, {"local_files_only": True}) or "")
        return _FAMILIES.get(reg) if reg else None
    return None


def registered_encoders() -> list[str]:
    """Names accepted by :func:`load_encoder`."""
    return sorted(_REGISTRY)


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


def hub_model_type(repo_id: str, kwargs: dict[str, Any] | None = None) -> str | None:
    """``model_type`` from a hub model's config.json, fetched with the loading arguments the model will
    get (revision, token, cache_dir, local_files_only; from the cache when offline); None when unknown."""
    try:
        from huggingface_hub import hf_hub_download  # comes with transformers

        kwargs = kwargs or {}
        extra = {key: kwargs[key] for key in ("token", "cache_dir") if kwargs.get(key) is not None}
        offline = bool(kwargs.get("local_files_only")) or hub_offline()
        path = hf_hub_download(repo_id, "config.json", revision=kwargs.get("revision"),
                               local_files_only=offline, **extra)
    except Exception:  # noqa: BLE001 - any failure means "unknown": the default encoder reports it
        return None
    return _model_type(Path(path).parent)


def load_encoder(spec: str | Encoder, **kwargs: Any) -> Encoder:
    """Resolve an encoder spec to an encoder instance.

    ``spec`` is an encoder instance (returned as is), a registered name (``load_encoder("colqwen3")``),
    a registered name with its checkpoint (``"colqwen3-cpu:/models/tomoro-4b"``: the name's settings,
    that hub id or folder), ``package.module:attr`` (a class or factory called with ``kwargs``, or an
    encoder instance), or a Hugging Face hub id / local model folder, dispatched on its config's
    ``model_type``.

    Any of these followed by ``+pool(factor=2,dedup=0.95,window=1024)`` (keys optional, defaults as
    :class:`~maxsim.encoders.pooled.PooledEncoder`; ``dedup=none`` turns duplicate dropping off) is that
    encoder, loaded with ``kwargs``, in a :class:`~maxsim.encoders.pooled.PooledEncoder` (token reduction at
    ingest).
    """
    if not isinstance(spec, str):
        return _check(spec, type(spec).__name__)
    for marker, loader in _WRAPPERS.items():
        if marker in spec and not Path(spec).expanduser().exists():
            return _check(loader(spec, kwargs), spec)
    name, sep, checkpoint = spec.partition(":")
    if spec in _REGISTRY or (sep and name in _REGISTRY and checkpoint):
        factory = _REGISTRY[name if sep else spec]
        if isinstance(factory, str):
            factory = import_attr(factory, "encoder")
        if sep:
            kwargs = {"id_or_path": checkpoint, **kwargs}
        return _check(factory(**kwargs), spec)
    if ":" in spec and not os.path.exists(spec):
        obj = import_attr(spec, "encoder")
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
        name = _MODEL_TYPES.get(hub_model_type(spec, kwargs) or "", DEFAULT_ENCODER)
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
# fewer, smaller frames per clip
register_encoder("colqwen3-cpu", "maxsim.encoders.colqwen3:load_cpu", family="colqwen3")
register_encoder("colqwen2", "maxsim.encoders.colqwen2:load", model_types=("colqwen2",))
# One vector per segment from Qwen3-VL-Embedding (native Qwen3-VL checkpoint folders and ids come here);
# one per frame pair with the -frames entry (same family: its encoders are named qwen3-vl-embedding:...).
register_encoder("qwen3-vl-embedding", "maxsim.encoders.qwen3vl_embedding:load", model_types=("qwen3_vl",))
register_encoder("qwen3-vl-embedding-frames", "maxsim.encoders.qwen3vl_embedding:load_frames",
                 family="qwen3-vl-embedding")
# One vector per frame: SigLIP / SigLIP 2 (default google/siglip2-base-patch16-224) and CLIP.
register_encoder("siglip", "maxsim.encoders.clip:load_siglip", model_types=("siglip", "siglip2"))
register_encoder("clip", "maxsim.encoders.clip:load_clip", model_types=("clip",))

# Deterministic colour encoder for tests and the synthetic benchmark (not a model; no weights).
register_encoder("color-test", "maxsim.testing.color:ColorHistogramEncoder")
