"""Load test of the HTTP service: N concurrent clients searching for a bounded time, on loopback only.

    from maxsim.server import loadtest
    result = loadtest.run({"index": "my.index", "clients": 32, "duration_s": 60}, "out/")

or ``python -m maxsim.server.loadtest --index my.index --clients 32 --duration 60 --out out/``.

By default it starts ``maxsim serve`` in a child process on a free 127.0.0.1 port (so client and server
do not share one interpreter lock), waits for /healthz, warms up, then runs ``clients`` workers that each
send one POST /search after another until ``duration_s`` has passed or ``max_requests`` were sent. With
``url`` it targets a running server instead, which must be on a loopback address. It reports latency
percentiles (p50/p90/p99), throughput, errors (any non-200 answer or transport failure) with samples,
and the server's batching counters, and writes them to ``out_dir/loadtest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from maxsim.encoders import registered_encoders
from maxsim.engine import Engine
from maxsim.server.state import is_loopback
from maxsim.summary import percentiles
from maxsim.testing.synthetic import COLORS, write_video

DEFAULTS: dict[str, Any] = {
    "clients": 32,  # concurrent clients, each with one request in flight
    "duration_s": 60.0,  # measured time
    "max_requests": 200_000,  # stop after this many measured requests even if time is left
    "warmup_requests": 20,
    "k": 10,
    "queries": [
        "a red scene",
        "blue sky",
        "green field at noon",
        "yellow taxi",
        "magenta and cyan lights",
        "a black screen",
        "white snow",
        "orange sunset over purple hills",
    ],
    "index": None,  # index to serve; None builds a synthetic one in out_dir
    "encoder": None,  # encoder spec for the served/synthetic index (default: the index's own)
    "synthetic_videos": 8,  # videos in the synthetic index, 4 scenes of 3 s each
    "url": None,  # target a running server instead (loopback only)
    "api_key": None,
    "batch_window_ms": 2.0,
    "torch_threads": None,  # the server's torch intra-op threads (None: torch's default)
    "request_timeout_s": 30.0,
    "startup_timeout_s": 120.0,
}


class LoadTestError(RuntimeError):
    """The load test could not run (bad config, server did not start)."""


def check_loopback(url: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    if is_loopback(urlsplit(url).hostname or ""):
        return
    raise LoadTestError(
        f"load tests only target loopback addresses (127.0.0.0/8, ::1, localhost); got {url!r}"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_synthetic_index(path: Path, encoder: str, videos: int, seed: int = 0) -> Path:
    """Colour-scene videos under ``path/videos`` ingested into ``path/index`` with ``encoder``."""

    rng = random.Random(seed)
    names = list(COLORS)
    files = []
    for i in range(videos):
        scenes = [(3.0, rng.choice(names)) for _ in range(4)]
        files.append(write_video(path / "videos" / f"v{i:03d}.mp4", scenes, seed=i))
    engine = Engine(path / "index", encoder=encoder, segmenter="fixed:3")
    report = engine.ingest(files, progress=False)
    if not report.ok:
        raise LoadTestError(f"synthetic ingest failed: {report}")
    return path / "index"


def _percentiles(ms: list[float]) -> dict[str, float]:
    out = percentiles(ms, (50, 90, 99))
    out["max"] = max(ms) if ms else float("nan")
    return out


async def _drive(base: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import httpx

    headers = {"X-API-Key": cfg["api_key"]} if cfg.get("api_key") else {}
    clients = int(cfg["clients"])
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(float(cfg["request_timeout_s"]))
    queries = list(cfg["queries"])
    k = int(cfg["k"])
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout) as c:
        for i in range(int(cfg["warmup_requests"])):
            r = await c.post("/search", json={"text": queries[i % len(queries)], "k": k})
            if r.status_code != 200:
                raise LoadTestError(f"warm-up search failed: {r.status_code} {r.text[:300]}")
        before = (await c.get("/healthz")).json().get("batching", {})
        t_end = time.monotonic() + float(cfg["duration_s"])
        max_requests = int(cfg["max_requests"])

        async def worker(w: int) -> None:
            nonlocal sent
            i = w
            while time.monotonic() < t_end and sent < max_requests:
                sent += 1
                q = queries[i % len(queries)]
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await c.post("/search", json={"text": q, "k": k})
                    dt = (time.perf_counter() - t0) * 1000
                    if r.status_code == 200 and "hits" in r.json():
                        latencies.append(dt)
                    else:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except Exception as e:  # transport errors count as errors, and the run goes on
                    errors.append(f"{type(e).__name__}: {e}"[:200])

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.monotonic() - t0
        after = (await c.get("/healthz")).json().get("batching", {})
    batching = {key: after.get(key, 0) - before.get(key, 0) for key in ("requests", "texts", "batches")}
    batching["mean_batch"] = batching["texts"] / batching["batches"] if batching["batches"] else 0.0
    batching["largest_batch"] = after.get("largest_batch", 0)
    n = len(latencies) + len(errors)
    return {
        "requests": n,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:10],
        "elapsed_s": elapsed,
        "throughput_rps": n / elapsed if elapsed > 0 else 0.0,
        "latency_ms": _percentiles(latencies),
        "server_batching": batching,
    }


def _start_server(index: Path, cfg: dict[str, Any], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "maxsim.cli",
        "serve",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--quiet",
        "--log-level",
        "warning",
        "--batch-window-ms",
        str(cfg["batch_window_ms"]),
    ]
    if cfg.get("encoder"):
        cmd += ["--encoder", str(cfg["encoder"])]
    if cfg.get("torch_threads"):
        cmd += ["--torch-threads", str(int(cfg["torch_threads"]))]
    env = dict(os.environ)
    if cfg.get("api_key"):
        env["MAXSIM_API_KEY"] = str(cfg["api_key"])
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with open(log, "wb") as logf:  # the child writes through its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + float(cfg["startup_timeout_s"])
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LoadTestError(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _stop(proc)
    raise LoadTestError(f"the server did not answer /healthz within {cfg['startup_timeout_s']} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(config: dict[str, Any] | None, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Run the load test described by ``config`` (keys of :data:`DEFAULTS`; unknown keys are an error)
    and write ``out_dir/loadtest.json``; returns the same dict."""
    cfg = dict(DEFAULTS)
    unknown = set(config or {}) - set(DEFAULTS)
    if unknown:
        raise LoadTestError(f"unknown load test setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg.update(config or {})
    if int(cfg["clients"]) < 1 or float(cfg["duration_s"]) <= 0 or int(cfg["max_requests"]) < 1:
        raise LoadTestError("clients, duration_s and max_requests must be positive")
    if not cfg["queries"]:
        raise LoadTestError("queries must not be empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proc = None
    try:
        if cfg["url"]:
            check_loopback(cfg["url"])
            base = str(cfg["url"]).rstrip("/")
            served = "external"
        else:
            index = cfg["index"]
            if index is None:
                enc = cfg["encoder"] or _default_synthetic_encoder()
                cfg["encoder"] = enc
                syn = out / "synthetic"
                shutil.rmtree(syn, ignore_errors=True)
                index = build_synthetic_index(syn, enc, int(cfg["synthetic_videos"]))
            proc, base = _start_server(Path(index), cfg, out / "server.log")
            served = str(index)
        result = asyncio.run(_drive(base, cfg))
    finally:
        if proc is not None:
            _stop(proc)
    result = {
        "benchmark": "serve-load",
        "target": base,
        "index": served,
        "config": {key: cfg[key] for key in DEFAULTS if key != "api_key"},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **result,
    }
    (out / "loadtest.json").write_text(json.dumps(result, indent=1))
    return result


def _default_synthetic_encoder() -> str:

    if "color-test" in registered_encoders():
        return "color-test"
    raise LoadTestError("no encoder for the synthetic index: set encoder (a spec) or index")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maxsim.server.loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--index", help="index to serve (default: build a synthetic one)")
    p.add_argument("--encoder", help="encoder spec for the index")
    p.add_argument("--url", help="target a running server on loopback instead")
    p.add_argument("--clients", type=int, default=DEFAULTS["clients"])
    p.add_argument("--duration", type=float, default=DEFAULTS["duration_s"], help="seconds")
    p.add_argument("--max-requests", type=int, default=DEFAULTS["max_requests"])
    p.add_argument("-k", type=int, default=DEFAULTS["k"])
    p.add_argument("--out", default="bench/out/serve-load", help="output folder")
    a = p.parse_args(argv)
    cfg = {
        "index": a.index,
        "encoder": a.encoder,
        "url": a.url,
        "clients": a.clients,
        "duration_s": a.duration,
        "max_requests": a.max_requests,
        "k": a.k,
    }
    try:
        r = run(cfg, a.out)
    except LoadTestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lat = r["latency_ms"]
    print(
        f"{r['requests']} requests in {r['elapsed_s']:.1f} s ({r['throughput_rps']:.1f}/s) from "
        f"{a.clients} clients: p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms; "
        f"{r['errors']} errors; mean batch {r['server_batching']['mean_batch']:.1f}"
    )
    return 0 if r["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
