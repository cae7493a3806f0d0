"""``maxsim-bench kernel``: the scoring kernels over a grid of shapes and dtypes, against measured ceilings.

The measuring is :mod:`maxsim.bench.kernel_bench`'s (``run(config, out_dir) -> dict``); this module runs it
with the preset's torch thread count, records its figures and turns them into tables (each list of records
and each flat dict it returns becomes one) and a plot of every case against the ceilings of the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maxsim.bench import kernel_bench
from maxsim.bench.report import Column, Run, Table, fmt_value
from maxsim.bench.timing import torch_threads

SUMMARY = 0


def run(rec: Run) -> None:
    with torch_threads(int(rec.config.get("threads", 0))):
        rec.put("kernel_bench", kernel_bench.run(rec.config, rec.dir))


def _generic_tables(result: Any, prefix: str = "") -> list[Table]:
    """Tables of what the kernel benchmark returned: each list of records and each flat dict becomes a
    table (nested dicts are searched one level further, their keys joined with ' / ')."""
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
    return _generic_tables(results.get("kernel_bench"))


def ceiling_shares(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every timed case of the shapes part as a share of the run's ceilings: ``pct_copy`` (GB/s of the
    copy bandwidth) and ``pct_matmul`` (TFLOP/s of the fp32 matmul for float32 storage, else bf16)."""
    ceil = result.get("ceilings") or {}
    out = []
    for r in result.get("shapes") or []:
        if "error" in r or not ceil:
            continue
        peak = ceil["matmul_fp32_TFLOPs" if r["dtype"] == "float32" else "matmul_bf16_TFLOPs"]
        out.append(
            {
                "label": f"{r['shape']} {r['dtype']} {r['method']}",
                "pct_copy": 100 * r["GBps"] / ceil["copy_GBps"],
                "pct_matmul": 100 * r["TFLOPs"] / peak,
            }
        )
    return out


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    cases = ceiling_shares(results.get("kernel_bench") or {})
    if not cases:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(cases) + 1.5), dpi=120)
    y = range(len(cases))
    ax.barh([i - 0.2 for i in y], [c["pct_copy"] for c in cases], height=0.4, label="% of copy bandwidth")
    ax.barh([i + 0.2 for i in y], [c["pct_matmul"] for c in cases], height=0.4, label="% of matmul peak")
    ax.set_yticks(list(y), [c["label"] for c in cases], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="% of the ceiling measured in this run", title="MaxSim kernels against the ceilings")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "kernel_ceilings.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
