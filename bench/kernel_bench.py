"""MaxSim kernel benchmark: ms, GB/s and TFLOP/s against ceilings measured in the same run.

``run(config, out_dir) -> dict`` is the entry point (``maxsim-bench kernel`` calls it; ``python
bench/kernel_bench.py [--device cpu|cuda] [--out DIR]`` runs it directly). Two parts:

- **shapes**: ``maxsim_scores`` / ``maxsim_topk`` through the device's default backend on each configured
  shape x storage dtype, with a padded torch einsum baseline on the same data. Inputs smaller than the
  rotation budget are replicated and rotated so a timing never reads a cache-warm copy.
- **cpu compare** (CPU only, :mod:`maxsim.bench.cpu_compare`): every instruction path of the compiled kernel
  on every storage dtype, each next to its ceiling (a large square torch matmul of the kernel's compute type,
  measured in the same rounds), with numpy float32 MaxSim (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, its
  BLAS kernel reported by threadpoolctl), torch and maxsim-cpu (when installed) on the same data, all in one
  subprocess whose thread count is pinned. Methods are interleaved round by round so that load from other
  processes hits them alike; medians are reported, and the issue's targets checked.

Config keys (all optional): ``device`` (auto|cpu|cuda), ``threads``, ``shapes`` (list of {name,
n_queries, q_tokens, n_docs, doc_tokens, dim}), ``dtypes`` (float32, float16, bfloat16, int8,
float8_e4m3fn), ``ops`` (scores, topk), ``k``, ``repeats``, ``warmup``, ``copy_mb``, ``matmul_n``,
``rotate_mb``, ``compare`` (false, or overrides of :data:`maxsim.bench.cpu_compare.COMPARE`: n_docs,
doc_tokens, dim, q_tokens, threads, rounds, matmul_n, paths, dtypes).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from maxsim.bench import cpu_compare

GPU_SHAPES = [
    {"name": "single", "n_queries": 1, "q_tokens": 32, "n_docs": 10000, "doc_tokens": 300, "dim": 128},
    {"name": "video", "n_queries": 1, "q_tokens": 32, "n_docs": 10000, "doc_tokens": 1280, "dim": 320},
    {"name": "multi", "n_queries": 128, "q_tokens": 32, "n_docs": 128, "doc_tokens": 300, "dim": 128},
    {"name": "long-query", "n_queries": 1, "q_tokens": 1024, "n_docs": 1000, "doc_tokens": 1024, "dim": 128},
]
CPU_SHAPES = [
    {"name": "single", "n_queries": 1, "q_tokens": 32, "n_docs": 2000, "doc_tokens": 300, "dim": 128},
    {"name": "video", "n_queries": 1, "q_tokens": 32, "n_docs": 200, "doc_tokens": 1280, "dim": 320},
    {"name": "multi", "n_queries": 128, "q_tokens": 32, "n_docs": 128, "doc_tokens": 300, "dim": 128},
]


# ------------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------------


def _now() -> float:
    return time.perf_counter()


def _time(fn, device, repeats: int, warmup: int) -> list[float]:
    """Seconds per call: triton.testing.do_bench on CUDA (L2 flushed), else wall clock per call."""
    if getattr(device, "type", device) == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(fn, warmup=max(25, warmup), rep=max(100, repeats), return_mode="all")
        return [m / 1e3 for m in ms]
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = _now()
        fn()
        out.append(_now() - t)
    return out


def _machine() -> dict[str, Any]:
    """The machine record of :func:`maxsim.bench.machine.machine`, plus the load at start and which CPU
    kernel paths are built and usable."""
    from maxsim.bench.machine import machine
    from maxsim.kernels import cpu as kcpu

    m = machine()
    try:
        with open("/proc/loadavg") as f:
            m["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    m["cpu_id"] = _cpu_id()
    try:
        m["cpu_kernel"] = kcpu.info()
    except (RuntimeError, ValueError) as e:  # MAXSIM_CPU_ISA names a path this CPU cannot run
        m["cpu_kernel"] = {"extension": kcpu.available(), "error": str(e)}
    return m


def _cpu_id() -> dict[str, str]:
    """Vendor, family, model and stepping from /proc/cpuinfo (virtual machines often hide the model name:
    "AMD EPYC" alone does not say Zen 3 or Zen 4)."""
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "stepping": "stepping"}
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys and keys[key.strip()] not in out:
                    out[keys[key.strip()]] = value.strip()
                if not line.strip() and out:
                    break
    except OSError:
        pass
    return out


def _slug(result: dict) -> str:
    """``<device>-<cpu or gpu name>[-f<family>m<model>]-<date>``, for result file names."""
    m = result["machine"]
    name = (m.get("gpu") or {}).get("name") or m.get("cpu") or "unknown"
    cid = m.get("cpu_id") or {}
    if not m.get("gpu") and cid.get("family"):
        name += f" f{cid['family']}m{cid['model']}"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"{'gpu' if result['device'].startswith('cuda') else 'cpu'}-{slug.strip('-')}-{result['date']}"


def _time_copy(n: int, device) -> list[float]:
    import torch

    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return _time(lambda: dst.copy_(src), device, repeats=10, warmup=2)


def ceilings(device, copy_mb: int = 1024, matmul_n: int = 4096) -> dict[str, float]:
    """A large copy (GB/s, read + write) and large fp32 / bf16 matmuls (TFLOP/s) on ``device``."""
    import torch

    out: dict[str, float] = {}
    n = copy_mb * (1 << 20) // 4
    out["copy_GBps"] = 2 * n * 4 / min(_time_copy(n, device)) / 1e9
    for name, dt in (("matmul_fp32_TFLOPs", torch.float32), ("matmul_bf16_TFLOPs", torch.bfloat16)):
        a = torch.randn(matmul_n, matmul_n, device=device).to(dt)
        b = torch.randn(matmul_n, matmul_n, device=device).to(dt)
        ts = _time(lambda a=a, b=b: a @ b, device, repeats=5, warmup=1)
        out[name] = 2 * matmul_n**3 / min(ts) / 1e12
    return out


# ------------------------------------------------------------------------------------------------------
# Shapes through the public API
# ------------------------------------------------------------------------------------------------------


def _make(shape: dict, dtype: str, device, seed: int):
    """Unit-norm random queries and segments, generated on the device in chunks (the video shape is 4G
    values) and stored in ``dtype`` with per-token scales where it needs them."""
    import torch
    from maxsim.bench.corpus import QUANTIZE_NAMES
    from maxsim.kernels import quantize

    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    n_d, t, dim = int(shape["n_docs"]), int(shape["doc_tokens"]), int(shape["dim"])
    n_q, qt = int(shape["n_queries"]), int(shape["q_tokens"])

    def unit(rows: int) -> torch.Tensor:
        x = torch.randn(rows, dim, generator=g, device=dev)
        return x / x.norm(dim=1, keepdim=True)

    parts, scales = [], []
    step = max(1, (1 << 24) // dim)
    for lo in range(0, n_d * t, step):
        data, scale = quantize(unit(min(step, n_d * t - lo)), QUANTIZE_NAMES.get(dtype, dtype), "token")
        parts.append(data)
        scales.append(scale)
    data = torch.cat(parts) if parts else torch.empty(0, dim, device=dev)
    scale = None if not scales or scales[0] is None else torch.cat(scales)
    do = torch.arange(n_d + 1, dtype=torch.int64) * t
    qo = torch.arange(n_q + 1, dtype=torch.int64) * qt
    return unit(n_q * qt), qo, data, do, scale


def _einsum_padded(q, qo, d, do, scale, n_q, qt, n_d, t):
    """The usual padded baseline: [n_q, qt, D] x [n_d, t, D] -> max over t -> sum over qt."""
    import torch

    dd = d.to(q.dtype) if scale is None else (d.to(torch.float32) * scale[:, None]).to(q.dtype)
    sim = torch.einsum("aid,bjd->abij", q.reshape(n_q, qt, -1), dd.reshape(n_d, t, -1))
    return sim.amax(-1).float().sum(-1)


def _cases(ops, q, qo, ds, do, scale, k, dims, cuda):
    """(name, fn) pairs for one shape; every call takes the next copy of the segments (rotation)."""
    from maxsim.kernels import maxsim_scores, maxsim_topk

    state = {"i": 0}

    def pick():
        state["i"] = (state["i"] + 1) % len(ds)
        return ds[state["i"]]

    cases = []
    for op in ops:
        if op == "topk":
            cases.append(("maxsim_topk", lambda: maxsim_topk(q, qo, pick(), do, k, d_scale=scale)))
        else:
            cases.append(("maxsim_scores", lambda: maxsim_scores(q, qo, pick(), do, d_scale=scale)))
    n_q, qt, n_d, t = dims
    if n_q * qt * n_d * t * (2 if cuda else 4) <= (16 << 30 if cuda else 2 << 30):
        cases.append(("einsum_padded", lambda: _einsum_padded(q, qo, pick(), do, scale, *dims)))
    return cases


def run_shapes(config: dict, device) -> list[dict]:
    import torch
    from tqdm import tqdm

    cuda = device.type == "cuda"
    shapes = config.get("shapes") or (GPU_SHAPES if cuda else CPU_SHAPES)
    dtypes = config.get("dtypes") or (
        ["bfloat16", "float8_e4m3fn"] if cuda else ["float32", "bfloat16", "int8", "float8_e4m3fn"]
    )
    ops = config.get("ops") or ["scores", "topk"]
    k = int(config.get("k", 10))
    repeats, warmup = int(config.get("repeats", 20 if cuda else 5)), int(config.get("warmup", 3))
    rotate_bytes = int(config.get("rotate_mb", 512 if cuda else 0)) << 20
    rows = []
    for shape in tqdm(shapes, desc="kernel shapes", unit="shape", disable=None):
        for dtype in dtypes:
            q, qo, d, do, scale = _make(shape, dtype, device, int(config.get("seed", 0)))
            if cuda and dtype != "float32":
                q = q.to(torch.bfloat16)
            nbytes = d.numel() * d.element_size() + (0 if scale is None else scale.numel() * 4)
            copies = max(1, math.ceil(rotate_bytes / max(1, nbytes))) if rotate_bytes else 1
            ds = [d] + [d.clone() for _ in range(copies - 1)]
            flops = 2.0 * q.shape[0] * d.shape[0] * d.shape[1]
            n_q, qt = int(shape["n_queries"]), int(shape["q_tokens"])
            n_d, t = int(shape["n_docs"]), int(shape["doc_tokens"])
            cases = _cases(ops, q, qo, ds, do, scale, k, (n_q, qt, n_d, t), cuda)
            for name, fn in cases:
                try:
                    ts = _time(fn, device, repeats, warmup)
                except Exception as e:  # noqa: BLE001 - a baseline that cannot run is reported, not fatal
                    err = repr(e)[:300]
                    rows.append({"shape": shape["name"], "dtype": dtype, "method": name, "error": err})
                    continue
                med = statistics.median(ts)
                rows.append({
                    "shape": shape["name"], "dtype": dtype, "method": name, "ms": med * 1e3,
                    "GBps": nbytes / med / 1e9, "TFLOPs": flops / med / 1e12, "repeats": len(ts),
                    "n_queries": n_q, "q_tokens": qt, "n_docs": n_d, "doc_tokens": t,
                    "dim": int(shape["dim"]),
                })  # fmt: skip
            del ds, q, d
            if cuda:
                torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------------


def _markdown(result: dict) -> str:
    lines = [f"# MaxSim kernel benchmark ({result['device']}, {result['date']})", ""]
    m = result["machine"]
    v = m.get("versions", {})
    gpu = (m.get("gpu") or {}).get("name")
    cid = m.get("cpu_id") or {}
    ident = f" ({cid.get('vendor')} family {cid.get('family')} model {cid.get('model')})"
    ident = "" if gpu or not cid else ident
    lines.append(f"Machine: {gpu or m.get('cpu', '?')}{ident}; {m.get('cpu_count')} CPUs; load at start "
                 f"{' '.join(m.get('loadavg_at_start', []))}; versions: "
                 + ", ".join(f"{a} {b}" for a, b in v.items()))  # fmt: skip
    c = result.get("ceilings") or {}
    if c:
        lines += ["", "Ceilings (same run): " + ", ".join(f"{a} {b:.3g}" for a, b in c.items())]
    if result.get("cpu_compare"):
        lines += cpu_compare.markdown(result["cpu_compare"])
    if result.get("shapes"):
        lines += ["", "## Shapes (public API, default backend)", "",
                  "| shape | dtype | method | ms | GB/s | TFLOP/s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in result["shapes"]:
            head = f"| {r['shape']} | {r['dtype']} | {r['method']} |"
            if "error" in r:
                lines.append(f"{head} error: {r['error'][:80]} | | |")
            else:
                lines.append(f"{head} {r['ms']:.3f} | {r['GBps']:.1f} | {r['TFLOPs']:.3f} |")
    return "\n".join(lines) + "\n"


def measure(config: dict) -> dict:
    """Run the benchmark described by ``config`` (in the caller's torch thread setting); its figures."""
    from maxsim.bench.timing import resolve_device

    device = resolve_device(config.get("device", "auto"))
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    result: dict[str, Any] = {"device": str(device), "date": date, "machine": _machine()}
    result["ceilings"] = ceilings(device, int(config.get("copy_mb", 1024)), int(config.get("matmul_n", 4096)))
    compare = config.get("compare", device.type == "cpu" and int(config.get("repeats", 5)) >= 5)
    if compare and device.type == "cpu":
        result["cpu_compare"] = cpu_compare.run(compare if isinstance(compare, dict) else {})
    if config.get("shapes", True) is not False:
        result["shapes"] = run_shapes(config if isinstance(config.get("shapes"), list) else
                                      {**config, "shapes": None}, device)  # fmt: skip
    return result


def run(config: dict, out_dir) -> dict:
    """:func:`measure` with ``config["threads"]`` torch threads; write ``<device>-<model>-<date>.json`` and
    ``.md`` to out_dir (the standalone entry point; ``maxsim-bench kernel`` records :func:`measure`)."""
    from maxsim.bench.timing import torch_threads

    with torch_threads(int(config.get("threads", 0))):
        result = measure(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _slug(result)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(_markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-shapes", action="store_true", help="only the ceilings and the CPU comparison")
    ap.add_argument("--compare", default=None, help="JSON overrides for the CPU comparison, or 'off'")
    a = ap.parse_args(argv)
    cfg: dict[str, Any] = {"device": a.device, "threads": a.threads}
    if a.no_shapes:
        cfg["shapes"] = False
    if a.compare == "off":
        cfg["compare"] = False
    else:
        cfg["compare"] = {"threads": a.threads, **(json.loads(a.compare) if a.compare else {})}
    result = run(cfg, a.out)
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
