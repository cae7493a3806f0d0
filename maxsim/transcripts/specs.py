"""The spec strings of transcript encoders and speech recognizers: ``BASE`` or ``BASE(key=value,...)``.

``BASE`` names the model (a registered name, ``name:checkpoint``, a Hugging Face id, a local folder or
``package.module:attr``); the options in parentheses set what changes its output (``per=cue``,
``max_length=128``, ``pooling=cls+mean``, ``language=de``). An index records the spec with the options
its vectors were made with, so reopening it loads the same encoder. A path that exists is always a
base, parentheses and all.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_OPTIONS = re.compile(r"^(?P<base>.+?)\((?P<opts>[^()]*)\)$")
_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``(base, {key: value})`` of a spec; no options when there are no parentheses or the whole spec
    is an existing path. Raises ValueError for a malformed option list."""
    m = _OPTIONS.match(spec.strip())
    if m is None or Path(spec).expanduser().exists():
        return spec, {}
    opts: dict[str, str] = {}
    body = m.group("opts").strip()
    for item in body.split(",") if body else []:
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not _KEY.match(key) or not value:
            raise ValueError(f"spec {spec!r}: option {item.strip()!r} is not key=value")
        if key in opts:
            raise ValueError(f"spec {spec!r}: option {key!r} given twice")
        opts[key] = value
    return m.group("base").strip(), opts


def join_options(base: str, options: Mapping[str, Any]) -> str:
    """The spec of ``base`` with ``options`` (None values left out; tuples joined with ``+``)."""
    items = []
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, (tuple, list)):
            value = "+".join(map(str, value))
        items.append(f"{key}={value}")
    return f"{base}({','.join(items)})" if items else base


def convert_options(spec: str, options: Mapping[str, str], types: Mapping[str, Callable[[str], Any]]
                    ) -> dict[str, Any]:
    """Spec options converted to keyword arguments by ``types`` (option -> converter); ValueError naming
    the spec for an unknown option or a value that does not convert."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        conv = types.get(key)
        if conv is None:
            raise ValueError(f"spec {spec!r}: unknown option {key!r} (known: {', '.join(sorted(types))})")
        try:
            out[key] = conv(value)
        except ValueError as e:
            raise ValueError(f"spec {spec!r}: option {key}={value!r}: {e}") from e
    return out


def import_attr(spec: str) -> Any:
    """The object ``package.module:attr`` names; ValueError saying what is missing."""
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{spec!r}: cannot import module {module!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ValueError(f"{spec!r}: module {module!r} has no attribute {attr!r}") from e
    return obj
