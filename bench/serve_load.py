"""``maxsim-bench serve``: the HTTP service under concurrent clients, on loopback only.

Runs :func:`maxsim.server.loadtest.run`: ``maxsim serve`` in a child process on a free 127.0.0.1 port
(or a running server given by ``url``, loopback only), ``clients`` concurrent clients each sending one
POST /search after another for ``duration_s`` seconds (at most ``max_requests``), then reports latency
percentiles, throughput, errors and the server's batching. Needs the serve extra. A run with any failed
request is marked failed: the service must answer every request under this load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maxsim.bench.config import ConfigError
from maxsim.bench.report import Column, Run, Table

SUMMARY = 0
_NOT_LOADTEST = {"description"}


class LoadErrors(RuntimeError):
    """Some requests of the load test failed."""


def run(rec: Run) -> None:
    try:
        from maxsim.server import loadtest
    except ImportError as e:
        need = 'pip install -e ".[serve]" in the maxsim checkout'
        raise ConfigError(f"the serve benchmark needs the serve extra: {need} ({e})") from e
    cfg = {k: v for k, v in rec.config.items() if k not in _NOT_LOADTEST}
    try:
        result = loadtest.run(cfg, rec.dir / "loadtest")
    except loadtest.LoadTestError as e:
        raise ConfigError(str(e)) from e
    rec.put("load", result)
    if result["errors"]:
        n, total = result["errors"], result["requests"]
        raise LoadErrors(f"{n} of {total} requests failed: {result['error_samples']}")


def tables(results: dict[str, Any]) -> list[Table]:
    r = results.get("load")
    if not r:
        return []
    lat, batch = r["latency_ms"], r["server_batching"]
    row = {
        "clients": r["config"]["clients"],
        "elapsed_s": r["elapsed_s"],
        "requests": r["requests"],
        "errors": r["errors"],
        "rps": r["throughput_rps"],
        "p50": lat["p50"],
        "p90": lat["p90"],
        "p99": lat["p99"],
        "max": lat["max"],
        "mean_batch": batch["mean_batch"],
        "largest_batch": batch["largest_batch"],
    }
    cols = [
        Column("clients", "clients"),
        Column("elapsed_s", "seconds", ".1f"),
        Column("requests", "requests"),
        Column("errors", "errors"),
        Column("rps", "requests/s", ".1f"),
        Column("p50", "p50 ms", ".1f"),
        Column("p90", "p90 ms", ".1f"),
        Column("p99", "p99 ms", ".1f"),
        Column("max", "max ms", ".1f"),
        Column("mean_batch", "texts per engine call", ".2f"),
        Column("largest_batch", "largest batch"),
    ]
    return [
        Table(
            f"POST /search under {row['clients']} concurrent clients ({r['index']})",
            cols,
            [row],
            note="latency per request as a client sees it (loopback HTTP, JSON, batching wait included); "
            "texts per engine call: how many concurrent searches the server grouped into one search_batch.",
        )
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    return []
