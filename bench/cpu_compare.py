"""The CPU part of the kernel benchmark: every instruction path of the compiled kernel on every storage dtype,
each figure next to its ceiling, with numpy, torch and maxsim-cpu (when installed) on the same data.

``run(cfg) -> dict`` measures in a subprocess whose thread pools are pinned to ``cfg["threads"]`` (OMP,
OpenBLAS, MKL, ... set before numpy or torch is imported) and whose environment has ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` removed: some machines set them to work around old OpenBLAS bugs, and they slow a
current numpy (~1.45x measured), which would flatter every ratio to it. The BLAS that numpy ran (kernel
architecture, version, threads) is reported from threadpoolctl.

torch's OpenMP workers wait passively (``OMP_WAIT_POLICY=PASSIVE``) so that none spins on the cores the
next method needs. In that process every method runs once per round, rounds interleaved (the order rotating
each round) so that load from other processes hits all of them alike:

- ceilings: a large square torch matmul per compute type (float32, bfloat16, int8 via ``torch._int_mm``);
- baselines: numpy float32 (matmul + reshape-max + sum, blocked), the same in torch float32 and bfloat16,
  maxsim-cpu (mixedbread, when installed);
- ours: :func:`maxsim.kernels.cpu.scores` forced to each usable path (``isa=``) on fp32, fp16, bf16, int8
  and fp8 storage (per-token scales). A row's ceiling is the matmul of the compute type its kernel uses
  (bf16 for ``vdpbf16ps`` / AMX bf16, int8 for VNNI / AMX int8, float32 for the FMA kernels), and its share
  is the median over rounds of (our rate / the ceiling's rate in the same round), from wall-clock times
  (the targets) and, alongside, from the process's CPU time per call, which other load on the machine does
  not inflate.

Targets (kernels issue): bf16 >= 70% of the bf16 matmul where a bf16 instruction scores it; int8 >= 1.5x our
bf16 on the same path where VNNI or AMX scores it; fp32 >= 80% of the fp32 matmul on the AVX-512 paths;
every dtype >= 70% of the fp32 matmul on the AVX2 paths.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

COMPARE = {"n_docs": 3000, "doc_tokens": 300, "dim": 128, "q_tokens": 32, "threads": 2, "rounds": 7,
           "matmul_n": 2048, "paths": None, "dtypes": ["fp32", "fp16", "bf16", "int8", "fp8"]}  # fmt: skip
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS",
               "NUMEXPR_NUM_THREADS")  # fmt: skip
UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8",
               "fp8": "float8_e4m3fn"}  # fmt: skip


def run(cfg: dict) -> dict:
    """Measure in a pinned-thread subprocess (see the module docstring); its figures."""
    cfg = {**COMPARE, **cfg}
    env = dict(os.environ)
    unset = {var: env.pop(var) for var in UNSET_VARS if var in env}
    for var in THREAD_VARS:
        env[var] = str(cfg["threads"])
    # torch's OpenMP workers otherwise spin after each parallel region, on the cores the next method needs
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, "-m", "maxsim.bench.cpu_compare", json.dumps(cfg)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"CPU comparison subprocess failed ({res.returncode}):\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["env_unset"] = unset
    return out


def compute_type(kernel: str, dtype: str) -> str:
    """The ceiling a kernel is measured against: the matmul of the type it multiplies in."""
    if kernel in ("avx512vnni", "avxvnni") or (kernel == "amx" and dtype == "int8"):
        return "int8"
    if kernel == "avx512bf16" or (kernel == "amx" and dtype in ("bf16", "fp8")):
        return "bf16"
    return "fp32"


def _blas_info() -> dict[str, Any]:
    """threadpoolctl's record of numpy's BLAS (the library under numpy's own folder) and of every other
    thread pool loaded in this process (torch's OpenMP, OpenCV's OpenBLAS, ...)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"error": "threadpoolctl is not installed (pip install 'maxsim[bench]')"}
    import numpy as np

    keep = ("user_api", "internal_api", "version", "architecture", "threading_layer", "num_threads")
    root = os.path.dirname(os.path.dirname(np.__file__))
    pools = [{**{k: i.get(k) for k in keep}, "filepath": i.get("filepath", "")} for i in threadpool_info()]
    mine = [p for p in pools
            if p["user_api"] == "blas" and os.path.relpath(p["filepath"], root).startswith("numpy")]
    return {"numpy": mine[0] if mine else None, "pools": pools}


def _methods(cfg: dict) -> tuple[dict[str, tuple[Any, dict]], Any]:
    """name -> (fn, meta) for every timed method, and numpy's reference scores."""
    import numpy as np
    import torch
    from maxsim.kernels import cpu as kcpu
    from maxsim.kernels import quantize
    from maxsim.kernels.validate import check

    n_d, t, dim, qt = int(cfg["n_docs"]), int(cfg["doc_tokens"]), int(cfg["dim"]), int(cfg["q_tokens"])
    rng = np.random.default_rng(0)
    d = rng.standard_normal((n_d * t, dim), dtype=np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = rng.standard_normal((qt, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    dt_, qt_ = torch.from_numpy(d), torch.from_numpy(q)
    do = torch.arange(n_d + 1, dtype=torch.int64) * t
    qo = torch.tensor([0, qt])
    flops = 2.0 * qt * n_d * t * dim
    block = max(1, (1 << 22) // (qt * t))  # segments per numpy/torch block: a ~16 MB similarity matrix

    def numpy_fp32():
        out = np.empty(n_d, np.float32)
        for i in range(0, n_d, block):
            j = min(n_d, i + block)
            out[i:j] = (q @ d[i * t : j * t].T).reshape(qt, j - i, t).max(2).sum(0)
        return out

    def torch_blocks(dd, qq):
        def f():
            out = torch.empty(n_d)
            for i in range(0, n_d, block):
                j = min(n_d, i + block)
                out[i:j] = (qq @ dd[i * t : j * t].T).reshape(qt, j - i, t).amax(2).float().sum(0)
            return out

        return f

    m: dict[str, tuple[Any, dict]] = {}
    n = int(cfg["matmul_n"])
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16()),
            "int8": (torch.randint(-127, 128, (n, n), dtype=torch.int8),
                     torch.randint(-127, 128, (n, n), dtype=torch.int8))}  # fmt: skip
    for name, (x, y) in gemm.items():
        fn = (lambda x=x, y=y: torch._int_mm(x, y)) if name == "int8" else (lambda x=x, y=y: x @ y)
        try:
            fn()
        except (RuntimeError, AttributeError):  # no int8 matmul in this torch build
            continue
        m[f"gemm_{name}"] = (fn, {"kind": "ceiling", "dtype": name, "flops": 2.0 * n**3, "bytes": 0})
    base = {"flops": flops, "kind": "baseline"}
    m["numpy_fp32"] = (numpy_fp32, {**base, "dtype": "fp32", "bytes": d.nbytes})
    m["torch_fp32"] = (torch_blocks(dt_, qt_), {**base, "dtype": "fp32", "bytes": d.nbytes})
    d_bf16 = dt_.to(torch.bfloat16)
    m["torch_bf16"] = (torch_blocks(d_bf16, qt_.to(torch.bfloat16)),
                       {**base, "dtype": "bf16", "bytes": d_bf16.numel() * 2})  # fmt: skip
    try:
        import maxsim_cpu  # mixedbread's package, when installed

        d3 = d.reshape(n_d, t, dim)
        m["maxsim_cpu_fp32"] = (lambda: maxsim_cpu.maxsim_scores(q, d3),
                                {**base, "dtype": "fp32", "bytes": d.nbytes})  # fmt: skip
    except ImportError:
        pass
    paths = cfg.get("paths") or kcpu.usable_paths()
    stored = {s: quantize(dt_, s, "token") for s in cfg["dtypes"]}
    for path in paths:
        kernels = kcpu.info(path)["paths"]
        for s, (data, scale) in stored.items():
            p = check(qt_, qo, data, do, scale)
            nbytes = data.numel() * data.element_size() + (0 if scale is None else scale.numel() * 4)
            kernel = kernels[DTYPE_NAMES[s]]
            meta = {"flops": flops, "kind": "ours", "path": path, "dtype": s, "kernel": kernel,
                    "bytes": nbytes, "ceiling": f"gemm_{compute_type(kernel, s)}"}  # fmt: skip
            m[f"{path}/{s}"] = (lambda p=p, path=path: kcpu.scores(p, isa=path), meta)
    return m, numpy_fp32()


def worker(cfg: dict) -> dict:
    """Runs inside the pinned subprocess: every method interleaved over the rounds; the figures."""
    import numpy as np
    import torch
    from maxsim.kernels import cpu as kcpu

    threads = int(cfg["threads"])
    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    methods, ref = _methods(cfg)
    blas = _blas_info()  # after numpy has loaded its BLAS
    agree = {}
    for name, (fn, meta) in methods.items():
        if meta["kind"] == "ceiling":
            continue
        got = fn()
        got = got.numpy() if hasattr(got, "numpy") else np.asarray(got)
        agree[name] = float(np.abs(got.reshape(-1) - ref).max() / np.abs(ref).max())
    for fn, _ in methods.values():  # warm-up
        fn()
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(int(cfg["rounds"])):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            methods[name][0]()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(max(time.process_time() - c0, 1e-9))
    rate = {name: [methods[name][1]["flops"] / s for s in ts] for name, ts in times.items()}
    cpu_rate = {name: [methods[name][1]["flops"] / s for s in ts] for name, ts in cpu_times.items()}

    def share(a: str, b: str, cpu: bool = False) -> float:
        """Median over rounds of a's rate over b's in the same round: wall-clock rates, or with ``cpu``
        rates per CPU-second of the process (what the work costs, whatever else runs on the machine)."""
        r = cpu_rate if cpu else rate
        return statistics.median([x / y for x, y in zip(r[a], r[b], strict=True)])

    base = statistics.median(times["numpy_fp32"])
    rows = []
    for name in names:
        meta, ts = methods[name][1], times[name]
        med = statistics.median(ts)
        row = {"method": name, "path": meta.get("path", ""), "dtype": meta["dtype"],
               "kernel": meta.get("kernel", ""), "ms": med * 1e3,
               "cpu_ms": statistics.median(cpu_times[name]) * 1e3, "TFLOPs": meta["flops"] / med / 1e12}
        if meta["kind"] != "ceiling":
            n_d = int(cfg["n_docs"])
            row.update({"segments_per_s": n_d / med, "GBps": meta["bytes"] / med / 1e9, "x_numpy": base / med,
                        "max_rel_diff_vs_numpy": agree[name]})  # fmt: skip
        ceil = meta.get("ceiling")
        if ceil in rate:
            row["ceiling"] = ceil
            row["ceiling_TFLOPs"] = statistics.median(rate[ceil]) / 1e12
            row["pct_of_ceiling"] = 100 * share(name, ceil)
            row["pct_of_ceiling_cpu_time"] = 100 * share(name, ceil, cpu=True)
            if "gemm_fp32" in rate and ceil != "gemm_fp32":
                row["pct_of_fp32_gemm"] = 100 * share(name, "gemm_fp32")
        rows.append(row)
    return {
        "config": cfg, "threads": threads, "torch_threads": torch.get_num_threads(), "rows": rows,
        "targets": targets(rows, share), "blas": blas, "cpu_kernel": kcpu.info("auto"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg": {"start": list(load0), "end": list(os.getloadavg())},
    }  # fmt: skip


def targets(rows: list[dict], share) -> list[dict[str, Any]]:
    """The issue's targets on each path measured, each with the measured value (wall-clock rates, and per
    CPU-second) and whether it is met (``share(a, b, cpu)``: the median over rounds of method a's rate over
    method b's)."""
    by = {(r["path"], r["dtype"]): r for r in rows if r["path"]}
    out = []

    def add(path, what, a, b, want, unit):
        scale = 100.0 if unit == "%" else 1.0
        value = scale * share(a, b)
        out.append({"path": path, "target": what, "measured": value, "wanted": want, "unit": unit,
                    "met": value >= want, "measured_cpu_time": scale * share(a, b, True)})  # fmt: skip

    for path in dict.fromkeys(r["path"] for r in rows if r["path"]):
        bf16, int8, fp32 = by.get((path, "bf16")), by.get((path, "int8")), by.get((path, "fp32"))
        if bf16 and compute_type(bf16["kernel"], "bf16") == "bf16" and "pct_of_ceiling" in bf16:
            add(path, "bf16 >= 70% of the bf16 matmul", bf16["method"], bf16["ceiling"], 70.0, "%")
        if int8 and bf16 and compute_type(int8["kernel"], "int8") == "int8":
            add(path, "int8 >= 1.5x our bf16", int8["method"], bf16["method"], 1.5, "x")
        avx512 = path in ("amx", "avx512bf16", "avx512vnni", "avx512")
        if fp32 and avx512 and fp32.get("ceiling") == "gemm_fp32":
            add(path, "fp32 >= 80% of the fp32 matmul", fp32["method"], "gemm_fp32", 80.0, "%")
        if path in ("avx2", "avxvnni"):
            for s in COMPARE["dtypes"]:
                r = by.get((path, s))
                if r and ("pct_of_fp32_gemm" in r or r.get("ceiling") == "gemm_fp32"):
                    add(path, f"{s} >= 70% of the fp32 matmul", r["method"], "gemm_fp32", 70.0, "%")
    return out


def markdown(cmp_: dict) -> list[str]:
    """Lines of the CPU comparison's section of the benchmark report."""
    cc, k = cmp_["config"], cmp_["cpu_kernel"]
    lines = ["", f"## CPU: 1 query x {cc['q_tokens']} tokens vs {cc['n_docs']} segments x {cc['doc_tokens']} "
                 f"tokens x {cc['dim']} dims, {cc['threads']} threads (median of {cc['rounds']} interleaved "
                 "rounds)", "",
             f"Kernel paths this CPU runs: {', '.join(k['usable'])} (not: "
             + "; ".join(f"{p}, lacks {', '.join(w)}" for p, w in k["unusable"].items()) + "). "
             f"Load average {cmp_['loadavg']['start'][0]:.2f} at start, {cmp_['loadavg']['end'][0]:.2f} at "
             "end (other processes share the machine).", "",
             "| method | kernel | ms | CPU ms | segments/s | TFLOP/s | ceiling | ceiling TFLOP/s | "
             "% of ceiling | % of ceiling per CPU-s | % of fp32 matmul | x numpy | max rel diff vs numpy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def f(r, key, fmt):
        return format(r[key], fmt) if key in r else ""

    for r in cmp_["rows"]:
        lines.append(f"| {r['method']} | {r.get('kernel', '')} | {r['ms']:.1f} | {r['cpu_ms']:.1f} | "
                     f"{f(r, 'segments_per_s', '.0f')} | {r['TFLOPs']:.3f} | {r.get('ceiling', '')} | "
                     f"{f(r, 'ceiling_TFLOPs', '.3f')} | {f(r, 'pct_of_ceiling', '.0f')} | "
                     f"{f(r, 'pct_of_ceiling_cpu_time', '.0f')} | {f(r, 'pct_of_fp32_gemm', '.0f')} | "
                     f"{f(r, 'x_numpy', '.2f')} | {f(r, 'max_rel_diff_vs_numpy', '.1e')} |")  # fmt: skip
    lines += ["", "| path | target | measured (wall clock) | met | per CPU-second |", "|---|---|---|---|---|"]
    for t in cmp_["targets"]:
        def val(v, unit=t["unit"]):
            return f"{v:.0f}%" if unit == "%" else f"{v:.2f}x"

        met = "yes" if t["met"] else "NO"
        lines.append(f"| {t['path']} | {t['target']} | {val(t['measured'])} | {met} | "
                     f"{val(t['measured_cpu_time'])} |")  # fmt: skip
    blas = cmp_["blas"]
    if "error" in blas:
        said = blas["error"]
    elif blas["numpy"]:
        b = blas["numpy"]
        said = (f"{b['internal_api']} {b['version']}, kernel {b['architecture']}, {b['num_threads']} threads "
                f"({os.path.basename(b['filepath'])})")
    else:
        said = "not found among the loaded thread pools"
    others = ", ".join(f"{p['internal_api']} ({os.path.basename(p['filepath'])})"
                       for p in blas.get("pools", []) if p != blas.get("numpy"))
    unset = ", ".join(f"{k}={v}" for k, v in (cmp_.get("env_unset") or {}).items())
    lines += ["", f"numpy's BLAS (threadpoolctl): {said}; other thread pools loaded: {others or 'none'}. "
                  f"Unset for the measuring process: {unset or 'nothing (neither variable was set)'}. "
                  f"torch CPU capability: {cmp_['torch_cpu_capability']}."]  # fmt: skip
    return lines


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
