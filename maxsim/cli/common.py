"""What every ``maxsim`` command shares: opening the engine with the index's own token reduction, the
``--pool-factor``/``--dedup`` rules, sizes as people read them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from maxsim.encoders import DEFAULT_ENCODER
from maxsim.encoders.record import reduction_conflict, with_index_reduction
from maxsim.encoders.spec import NO_REDUCTION, parse_pool_setting, pool_suffix
from maxsim.engine import Engine
from maxsim.errors import IndexNotFoundError
from maxsim.index.store import Store


def recorded_encoder_name(index: str | os.PathLike) -> str | None:
    """The encoder name an existing index records, None when there is no index there."""
    try:
        return str(Store(index).manifest().encoder.get("name", ""))
    except IndexNotFoundError:
        return None


def encoder_arg(args: argparse.Namespace) -> str | None:
    """``--encoder``, wrapped in the index's token reduction when the index records one and the spec
    given has none: the reduction belongs to the index, like its dtype."""
    enc = getattr(args, "encoder", None)
    return with_index_reduction(enc, None if enc is None else recorded_encoder_name(args.index))


def open_engine(args: argparse.Namespace, create: bool, **kwargs: Any) -> Engine:
    """The engine of ``args.index`` with ``--encoder`` (if given) as :func:`encoder_arg` wraps it."""
    return Engine(args.index, encoder=encoder_arg(args), create=create,
                  dtype=getattr(args, "dtype", "float16"), **kwargs)


UNSET = object()


def pool_arg(key: str):
    """An argparse type for token-reduction setting ``key`` (checked by maxsim.encoders.spec)."""

    def parse(text: str):
        try:
            return parse_pool_setting(key, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r} is not {e}") from None

    return parse


def fmt_reduction(r: dict) -> str:
    if r["factor"] == 1 and r["dedup"] is None:
        return "no token reduction"
    dd = "none" if r["dedup"] is None else f"{r['dedup']:g}"
    return f"token reduction --pool-factor {r['factor']:g} --dedup {dd} (window {r['window']})"


def reduction_args(args: argparse.Namespace) -> str | None:
    """Apply ``--pool-factor`` / ``--dedup``: on a new index, wrap the chosen encoder spec (a reduction
    not asked for is off); on an existing one, check them against what it was built with. Returns an
    error message, or None."""
    given = {}
    if args.pool_factor is not None:
        given["factor"] = args.pool_factor
    if args.dedup is not UNSET:
        given["dedup"] = args.dedup
    if not given:
        return None
    flags = " ".join(f"--{'pool-factor' if k == 'factor' else 'dedup'} {'none' if v is None else f'{v:g}'}"
                     for k, v in given.items())
    if (Path(args.index) / "manifest.json").exists():
        have = reduction_conflict(given, recorded_encoder_name(args.index) or "")
        if have is not None:
            return (f"{args.index} was built with {fmt_reduction(have)}, and an index keeps the reduction "
                    f"it was built with; this ingest asks for {flags}. Drop the flag(s) to add videos "
                    "with the index's own settings, or ingest into a new index folder to use others")
        return None
    settings = {**NO_REDUCTION, **given}
    if settings == NO_REDUCTION:
        return None  # every reduction asked for is off
    if args.encoder is not None and "+pool(" in args.encoder:
        return (f"--encoder {args.encoder!r} already sets token reduction with '+pool(...)': "
                f"leave out {flags}, or give the encoder without '+pool(...)'")
    base = args.encoder or DEFAULT_ENCODER
    args.encoder = base + pool_suffix(**settings)
    return None


def fmt_bytes(n: int) -> str:
    """A byte count as people read it (``12.3 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
