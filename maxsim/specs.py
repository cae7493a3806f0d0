"""The one spec syntax, and numbers and counts as people read them.

Segmenters, encoders and token reduction are all named by short strings: ``"scenes:content,threshold=30"``,
``"colqwen3-cpu:/models/x"``, ``"colqwen3+pool(factor=2,dedup=0.95)"``, ``"mypkg.mod:MyEncoder"``. Their
option lists share one grammar, parsed here: comma-separated values, positional first, then ``key=value``;
a value is ``none``/``null``, ``true``/``false``, an int, a float, or else a string. ``package.module:attr``
names an importable object. Each caller checks its own keys and values and names the spec in its errors.
"""

from __future__ import annotations

import importlib
from typing import Any


def parse_value(text: str) -> Any:
    """One option value: None, a bool, an int, a float, or the text itself."""
    s = text.strip()
    low = s.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def parse_options(text: str, what: str, raw: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """``"a,b,key=value,..."`` as ``([a, b], {key: value})``; values parsed with :func:`parse_value`
    (kept as stripped text with ``raw``). ValueError naming ``what`` (e.g. "segmenter spec 'scenes:..'")
    for a bad key, a repeated key, or a positional value after a ``key=value``."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            key, value = (x.strip() for x in part.split("=", 1))
            if not key.isidentifier():
                raise ValueError(f"{what}: {part!r} is not key=value with a name for the key")
            if key in kwargs:
                raise ValueError(f"{what}: {key!r} is given twice")
            kwargs[key] = value if raw else parse_value(value)
        elif kwargs:
            raise ValueError(f"{what}: positional value {part!r} after key=value options")
        else:
            args.append(part if raw else parse_value(part))
    return args, kwargs


def is_import_spec(spec: str) -> bool:
    """Whether ``spec`` has the form ``package.module:attr`` (dotted identifiers on both sides)."""
    head, sep, tail = spec.partition(":")
    return bool(sep and tail) and all(p.isidentifier() for p in head.split(".")) and all(
        p.isidentifier() for p in tail.split("."))


def import_attr(spec: str, what: str) -> Any:
    """The object ``package.module:attr`` names (``attr`` may be dotted). ValueError naming ``what``
    when the module cannot be imported or has no such attribute."""
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{what} {spec!r}: cannot import module {module!r} ({e})") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ValueError(f"{what} {spec!r}: module {module!r} has no attribute {attr!r}") from e
    return obj


def fmt_float(x: float) -> str:
    """``x`` as a spec or name shows it: ``%g`` (``2``, ``0.95``) when that reads back exactly, else
    ``repr`` (so a name round-trips)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 segment"``, ``"2 segments"``; ``many`` for an irregular plural (``plural(n, "index",
    "indexes")``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def fmt_num(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, never ``-0.000``: a value that rounds to zero prints as zero."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"
