"""Summaries of measured values (latencies), shared by the load test and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ..., "mean": ...}`` of ``values`` (linear interpolation); NaN for
    no values."""
    if len(values) == 0:
        return {f"p{q:g}": float("nan") for q in qs} | {"mean": float("nan")}
    a = np.asarray(values, dtype=np.float64)
    out = {f"p{q:g}": float(np.percentile(a, q)) for q in qs}
    out["mean"] = float(a.mean())
    return out
