"""Wall-clock timing of calls as a user sees them (device work included), and kernel-call plumbing."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from maxsim.bench.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch understands it."""
    if name in ("", "auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device")
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[int], Any],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    max_seconds: float | None = None,
    min_repeats: int = 3,
) -> list[float]:
    """Seconds of each of up to ``repeats`` calls ``fn(i)`` after ``warmup`` untimed ones.

    Each call is timed from its start to the device being idle again. With ``max_seconds`` the loop stops
    early once that much time went into timed calls and at least ``min_repeats`` were made.
    """
    for i in range(warmup):
        fn(i)
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(warmup + i)
        synchronize(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if max_seconds is not None and spent >= max_seconds and len(times) >= min_repeats:
            break
    return times


def kernel_kwargs(fn: Callable, backend: str | None = None, d_scale: torch.Tensor | None = None) -> dict:
    """Keyword arguments for a ``maxsim.kernels`` function, refusing ones this version does not take."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw: dict[str, Any] = {}
    if backend not in (None, "", "auto"):
        if "backend" not in params and not takes_any:
            raise ConfigError(
                f"backend={backend!r} asked for, but this maxsim.kernels.{fn.__name__} has no backend "
                'argument (use backend="auto")'
            )
        kw["backend"] = backend
    if d_scale is not None:
        if "d_scale" not in params and not takes_any:
            raise ConfigError(
                f"int8/fp8 storage needs per-token scales, but this maxsim.kernels.{fn.__name__} has no "
                "d_scale argument (use a float16/bfloat16/float32 dtype)"
            )
        kw["d_scale"] = d_scale
    return kw


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: leave the setting alone), restoring the previous setting."""
    before = torch.get_num_threads()
    if n and n > 0:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
