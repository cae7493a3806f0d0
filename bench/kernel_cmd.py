"""``maxsim-bench kernel``: the scoring kernels over a grid of shapes and dtypes, against measured ceilings.

When ``maxsim.bench.kernel_bench`` (the kernel issue's benchmark, ``run(config, out_dir) -> dict``) is
installed it does the measuring and its returned figures are recorded and tabulated. Otherwise this module
measures itself: ``maxsim_scores`` and ``maxsim_topk`` on every shape x storage dtype x backend, each as
ms, GB/s and TFLOP/s and as a percentage of two ceilings measured in the same run on the same device (a
large device copy; a large matmul).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from maxsim.bench.corpus import make_corpus, make_queries, storage_dtype
from maxsim.bench.metrics import percentiles
from maxsim.bench.report import Column, Run, Table, fmt_value
from maxsim.bench.timing import kernel_kwargs, resolve_device, synchronize, time_calls, torch_threads
from tqdm import tqdm

SUMMARY = 0


def _external():
    """The kernel issue's benchmark module, or None while it does not exist."""
    try:
        mod = importlib.import_module("maxsim.bench.kernel_bench")
    except ModuleNotFoundError as e:
        if e.name in ("maxsim.bench.kernel_bench",):
            return None
        raise
    return mod if hasattr(mod, "run") else None


def run(rec: Run) -> None:
    with torch_threads(int(rec.config.get("threads", 0))):
        _run(rec)


def _run(rec: Run) -> None:
    cfg = rec.config
    mod = None if cfg.get("builtin", False) else _external()
    if mod is not None:
        rec.put("source", "maxsim.bench.kernel_bench")
        result = mod.run(cfg, rec.dir)
        rec.put("kernel_bench", result)
        return
    rec.put("source", "maxsim.bench.kernel_cmd (built-in)")
    device = resolve_device(cfg.get("device", "auto"))
    rec.put("ceilings", ceilings(device, cfg))
    ceil = rec.results["ceilings"]
    from maxsim.kernels import maxsim_scores, maxsim_topk

    grid = [(s, dt, be) for s in cfg["shapes"] for dt in cfg["dtypes"] for be in cfg["backends"]]
    for shape, dtype, backend in tqdm(grid, desc="kernel shapes", unit="case", disable=None):
        corpus = make_corpus(
            int(shape["n_docs"]),
            tokens=(int(shape["doc_tokens"]), int(shape["doc_tokens"])),
            dim=int(shape["dim"]),
            dtype=dtype,
            device=device,
            seed=int(cfg.get("seed", 0)),
        )
        q, qo, _ = make_queries(corpus, int(shape["n_queries"]), int(shape["q_tokens"]))
        q = q.to(storage_dtype(cfg.get("query_dtype", "float32")))
        for op in cfg["ops"]:
            fn = maxsim_topk if op == "topk" else maxsim_scores
            kw = kernel_kwargs(fn, backend, corpus.scale)
            args = (q, qo, corpus.tokens, corpus.offsets) + ((int(cfg["k"]),) if op == "topk" else ())
            times = time_calls(
                lambda i, fn=fn, args=args, kw=kw: fn(*args, **kw),
                device,
                repeats=int(cfg["repeats"]),
                warmup=int(cfg["warmup"]),
                max_seconds=float(cfg["max_seconds_per_case"]),
            )
            p50 = percentiles(times)["p50"]
            nbytes = corpus.nbytes() + q.numel() * q.element_size()
            flops = 2.0 * q.shape[0] * corpus.tokens.shape[0] * q.shape[1]
            rec.add(
                "cases",
                {
                    "shape": shape.get("name", ""),
                    "n_queries": int(shape["n_queries"]),
                    "q_tokens": int(shape["q_tokens"]),
                    "n_docs": int(shape["n_docs"]),
                    "doc_tokens": int(shape["doc_tokens"]),
                    "dim": int(shape["dim"]),
                    "dtype": dtype,
                    "backend": backend,
                    "op": op,
                    "calls": len(times),
                    "ms": p50 * 1e3,
                    "gb_per_s": nbytes / p50 / 1e9,
                    "tflops": flops / p50 / 1e12,
                    "pct_copy": 100 * nbytes / p50 / 1e9 / ceil["copy_gb_per_s"],
                    "pct_matmul": 100 * flops / p50 / 1e12 / ceil["matmul_tflops"],
                },
            )
        del corpus, q


def ceilings(device: torch.device, cfg: dict[str, Any]) -> dict[str, Any]:
    """Copy bandwidth (read + write bytes / s) and dense matmul rate, measured now on ``device``."""
    mb = int(cfg.get("copy_mb", 1024 if device.type == "cuda" else 256))
    src = torch.empty(mb * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = percentiles(time_calls(lambda i: dst.copy_(src), device, repeats=10, warmup=2))["p50"]
    copy = 2 * src.numel() * 4 / t / 1e9
    src = dst = None  # free before the matmul
    n = int(cfg.get("matmul_n", 8192 if device.type == "cuda" else 2048))
    mdt = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn((n, n), device=device).to(mdt)
    b = torch.randn((n, n), device=device).to(mdt)
    synchronize(device)
    t = percentiles(time_calls(lambda i: a @ b, device, repeats=10, warmup=2))["p50"]
    return {
        "copy_gb_per_s": copy,
        "copy_mb": mb,
        "matmul_tflops": 2 * n**3 / t / 1e12,
        "matmul_n": n,
        "matmul_dtype": str(mdt).replace("torch.", ""),
    }


def _generic_tables(result: Any, prefix: str = "") -> list[Table]:
    """Tables of whatever the external kernel benchmark returned: each list of records and each flat
    dict becomes a table (nested dicts are searched one level further, their keys joined with ' / ')."""
    out: list[Table] = []
    if not isinstance(result, dict):
        return out
    for key, value in result.items():
        title = f"{prefix}{key}"
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            flat = (k for r in value for k, v in r.items() if not isinstance(v, (dict, list)))
            cols = list(dict.fromkeys(flat))
            out.append(Table(title, [Column(c, c, _num) for c in cols], value))
        elif isinstance(value, dict) and value:
            scalars = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
            if scalars:
                out.append(Table(title, [Column(c, c, _num) for c in scalars], [scalars]))
            if not prefix:
                out += _generic_tables(
                    {k: v for k, v in value.items() if isinstance(v, (dict, list))}, f"{title} / "
                )
    return out


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return fmt_value(v)


def tables(results: dict[str, Any]) -> list[Table]:
    if "kernel_bench" in results:
        return _generic_tables(results["kernel_bench"])
    c = results.get("ceilings")
    return [
        Table(
            "MaxSim kernels (p50 of repeated calls)",
            [
                Column("shape", "shape"),
                Column("n_queries", "queries"),
                Column("q_tokens", "q tok"),
                Column("n_docs", "segments", ","),
                Column("doc_tokens", "seg tok"),
                Column("dim", "dim"),
                Column("dtype", "dtype"),
                Column("backend", "backend"),
                Column("op", "op"),
                Column("ms", "ms", ".3f"),
                Column("gb_per_s", "GB/s", ".1f"),
                Column("tflops", "TFLOP/s", ".3f"),
                Column("pct_copy", "% copy BW", ".1f"),
                Column("pct_matmul", "% matmul", ".1f"),
            ],
            results.get("cases", []),
        ),
        Table(
            "Ceilings measured in this run",
            [
                Column("copy_gb_per_s", "copy GB/s (read+write)", ".1f"),
                Column("copy_mb", "copy MiB"),
                Column("matmul_tflops", "matmul TFLOP/s", ".3f"),
                Column("matmul_n", "matmul n"),
                Column("matmul_dtype", "matmul dtype"),
            ],
            [c] if c else [],
        ),
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    cases = results.get("cases", [])
    if not cases:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{c['shape']} {c['dtype']} {c['backend']} {c['op']}" for c in cases]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(cases) + 1.5), dpi=120)
    y = range(len(cases))
    ax.barh([i - 0.2 for i in y], [c["pct_copy"] for c in cases], height=0.4, label="% of copy bandwidth")
    ax.barh([i + 0.2 for i in y], [c["pct_matmul"] for c in cases], height=0.4, label="% of matmul peak")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="% of the ceiling measured in this run", title="MaxSim kernels against the ceilings")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "kernel_ceilings.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
