"""Wall-clock timing of calls as a user sees them (device work included), and the device they run on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from maxsim.bench.config import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """A config's ``device`` (see :func:`maxsim.encoders.checkpoint.default_device`; ``auto`` picks CUDA
    when available), a device torch cannot provide being a :class:`ConfigError`."""
    from maxsim.encoders.checkpoint import default_device

    try:
        return default_device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"device: {e}") from e


def synchronize(device: torch.device | None = None) -> None:
    """Wait for the work queued on ``device`` (None: the current CUDA device, when there is one)."""
    if device is None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return
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
