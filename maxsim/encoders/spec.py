"""The token-reduction part of encoder specs: ``"<encoder spec>+pool(factor=F,dedup=COS,window=N)"``.

The same string ends the name of a :class:`~maxsim.encoders.pooled.PooledEncoder`, so an index's recorded
encoder name says which reduction it was built with (:func:`reduction_of`). Pure string handling.
"""

from __future__ import annotations

import math
from typing import Any

from maxsim.specs import fmt_float, parse_options

POOL_KEYS = ("factor", "dedup", "window")
POOL_OPEN = "+pool("
POOL_EXAMPLE = "colqwen3+pool(factor=2,dedup=0.95,window=1024)"


def pool_suffix(factor: float = 2.0, dedup: float | None = 0.95, window: int = 1024) -> str:
    """The ``"+pool(factor=F,dedup=D,window=W)"`` that ends the name and spec of a
    :class:`~maxsim.encoders.pooled.PooledEncoder`."""
    dd = "none" if dedup is None else fmt_float(float(dedup))
    return f"{POOL_OPEN}factor={fmt_float(float(factor))},dedup={dd},window={int(window)})"


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


def strip_pool_suffix(spec: str) -> str:
    """An encoder spec (or name) without its ``+pool(...)`` token-reduction suffixes."""
    while (split := split_pool_spec(spec)) is not None:
        spec = split[0]
    return spec


def split_pool_spec(spec: str) -> tuple[str, dict[str, Any]] | None:
    """Split ``"<inner spec>+pool(factor=2,dedup=0.95,window=1024)"`` into the inner spec and the
    :class:`~maxsim.encoders.pooled.PooledEncoder` keyword arguments (keys left out take its defaults;
    ``dedup=none`` turns duplicate dropping off). None when ``spec`` has no ``+pool(``.

    The split is at the last ``+pool(``, which must be closed by the ``)`` that ends the spec, so the inner
    spec may be anything :func:`maxsim.encoders.load_encoder` takes (``NAME:CHECKPOINT``, a path, even
    another ``+pool(...)``). A malformed spec raises ValueError naming the spec, the key or value at fault
    and what was expected.
    """
    inner, sep, body = spec.rpartition(POOL_OPEN)
    if not sep:
        return None
    inner = inner.strip()
    body = body.rstrip()
    if not body.endswith(")"):
        raise ValueError(
            f"encoder spec {spec!r}: '+pool(' must be closed by a ')' that ends the spec, "
            f"e.g. {POOL_EXAMPLE!r}"
        )
    if not inner:
        raise ValueError(f"encoder spec {spec!r}: no encoder before '+pool(', e.g. {POOL_EXAMPLE!r}")
    args = body[:-1]
    if "(" in args or ")" in args:
        raise ValueError(
            f"encoder spec {spec!r}: unexpected parenthesis in '+pool({args})'; expected "
            f"comma-separated key=value of {', '.join(POOL_KEYS)}"
        )
    out: dict[str, Any] = {"factor": 2.0, "dedup": 0.95, "window": 1024}
    expected = f"expected comma-separated key=value of {', '.join(POOL_KEYS)}, e.g. {POOL_EXAMPLE!r}"
    what = f"encoder spec {spec!r}"
    try:
        positional, given = parse_options(args, what, raw=True)
    except ValueError as e:
        raise ValueError(f"{e}; {expected}") from None
    if positional:
        raise ValueError(f"{what}: {positional[0]!r} is not key=value; {expected}")
    for key, text in given.items():
        if key.lower() not in POOL_KEYS:
            raise ValueError(f"{what}: unknown key {key!r} in '+pool(...)'; expected {', '.join(POOL_KEYS)}")
        if not text:
            raise ValueError(f"{what}: {key + '='!r} has no value; {expected}")
        out[key.lower()] = _pool_value(spec, key.lower(), text)
    return inner, out


def reduction_of(name: str) -> dict[str, Any] | None:
    """The ``{"factor", "dedup", "window"}`` an encoder name (or spec) ends with, None when it has no
    ``+pool(...)`` or only looks like it (a name that merely contains ``+pool(``)."""
    try:
        split = split_pool_spec(str(name))
    except ValueError:
        return None
    return None if split is None else split[1]


NO_REDUCTION: dict[str, Any] = {"factor": 1.0, "dedup": None, "window": 1024}
