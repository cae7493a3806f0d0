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


def device_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--device``, ``--backend`` and ``--device-memory`` as :class:`~maxsim.Engine` keyword arguments."""
    out: dict[str, Any] = {}
    if getattr(args, "device", None) is not None:
        out["device"] = args.device
    if getattr(args, "backend", None) is not None:
        out["search_backend"] = args.backend
    if getattr(args, "device_memory", None) is not None:
        out["device_memory"] = args.device_memory
    return out


def device_memory_arg(text: str) -> int | float:
    """``--device-memory``: bytes (``12e9``, ``8GiB``) or a fraction of the GPU (``0.5``)."""
    t = text.strip().lower()
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    try:
        for unit, mult in units.items():
            if t.endswith(unit):
                return int(float(t[: -len(unit)]) * mult)
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not bytes (e.g. 8GiB, 12e9) or a fraction of the GPU's memory (e.g. 0.5)") from None
    return v if 0 < v <= 1 else int(v)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """The search-device flags of ``maxsim search`` and ``maxsim serve``."""
    p.add_argument("--device", metavar="DEV",
                   help="where searches run: auto (default: the first CUDA device when torch sees one and "
                   "Triton imports, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--backend", choices=["triton", "cpu", "torch"],
                   help="force a MaxSim kernel backend (default: Triton on a GPU, the compiled kernel on the "
                   "CPU)")
    p.add_argument("--device-memory", type=device_memory_arg, metavar="BYTES|FRACTION",
                   help="how much of the GPU the index's tokens may take (8GiB, 12e9 or 0.6; default: what "
                   "leaves 20%% of the GPU free); the rest is streamed at each search")


def open_engine(args: argparse.Namespace, create: bool, **kwargs: Any) -> Engine:
    """The engine of ``args.index`` with ``--encoder`` (if given) as :func:`encoder_arg` wraps it, on the
    search device the flags name."""
    return Engine(args.index, encoder=encoder_arg(args), create=create,
                  dtype=getattr(args, "dtype", "float16"), **{**device_kwargs(args), **kwargs})


def transcript_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--transcripts``, ``--transcript-encoder``, ``--languages``, ``--speech`` as Engine keyword
    arguments (none when none is given)."""
    spec = getattr(args, "transcript_encoder", None)
    speech = getattr(args, "speech", None)
    langs = getattr(args, "languages", None)
    if not (getattr(args, "transcripts", False) or spec or speech or langs):
        return {}
    options: dict[str, Any] = {"speech": speech}
    if langs:
        options["languages"] = tuple(x.strip() for x in langs.split(",") if x.strip())
    return {"transcript_encoder": spec, "transcripts": options}


def channel_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--channels``, ``--fusion``, ``--transcript-weight`` as search options (those given)."""
    out: dict[str, Any] = {}
    if getattr(args, "channels", None):
        out["channels"] = tuple(x.strip() for x in args.channels.split(",") if x.strip())
    if getattr(args, "fusion", None):
        out["fusion"] = args.fusion
    if getattr(args, "transcript_weight", None) is not None:
        out["transcript_weight"] = args.transcript_weight
    return out


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
