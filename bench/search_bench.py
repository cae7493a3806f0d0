"""``maxsim-bench search``: query latency and throughput against corpus size, query batch and k.

The corpus is synthetic (:mod:`maxsim.bench.corpus`) with the shape of a video index: ragged segments of
``tokens`` tokens, ``dim`` dims, in the storage ``dtype``. It is generated once at the largest size and
timed on growing prefixes, so every size shares its segments with the smaller ones. Each timed call is one
``maxsim.kernels.maxsim_topk`` over the whole prefix for a batch of precomputed query vectors: the scoring
part of a search, without text encoding. Latency is per call (a batch answers together), QPS is queries
per second at the median latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from maxsim.bench.config import ConfigError
from maxsim.bench.corpus import make_corpus, make_queries, storage_dtype
from maxsim.bench.metrics import percentiles
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.timing import kernel_kwargs, resolve_device, set_threads, time_calls

SUMMARY = 0


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(cfg: dict[str, Any], device: torch.device) -> int:
    """Estimated corpus bytes at the largest size; refuses a corpus over 70% of free memory."""
    lo, hi = cfg["tokens"]
    n = max(cfg["corpus_sizes"])
    itemsize = storage_dtype(cfg["dtype"]).itemsize
    need = int(n * (lo + hi) / 2 * (cfg["dim"] * itemsize + (4 if itemsize == 1 else 0)))
    free = _available_bytes(device)
    if free is not None and need > 0.7 * free:
        raise ConfigError(
            f"a corpus of {n} segments x ~{(lo + hi) // 2} tokens x {cfg['dim']} dims in {cfg['dtype']} "
            f"needs ~{need / 2**30:.1f} GiB but {device} has {free / 2**30:.1f} GiB free; "
            "lower corpus_sizes or tokens"
        )
    return need


def run(rec: Run) -> None:
    cfg = rec.config
    from maxsim.kernels import maxsim_topk

    device = resolve_device(cfg.get("device", "auto"))
    set_threads(int(cfg.get("threads", 0)))
    sizes = sorted(int(n) for n in cfg["corpus_sizes"])
    batches = [int(b) for b in cfg["batch_sizes"]]
    ks = [int(k) for k in cfg["ks"]]
    need = check_memory(cfg, device)
    rec.put("setup", {"device": str(device), "threads": torch.get_num_threads(), "corpus_bytes_max": need})

    with tqdm(total=sizes[-1], desc="generating corpus", unit="seg", unit_scale=True, disable=None) as bar:
        corpus = make_corpus(
            sizes[-1],
            tokens=tuple(cfg["tokens"]),
            dim=int(cfg["dim"]),
            n_clusters=int(cfg["n_clusters"]),
            clusters_per_segment=int(cfg["clusters_per_segment"]),
            noise=float(cfg["noise"]),
            dtype=cfg["dtype"],
            device=device,
            seed=int(cfg["seed"]),
            progress=bar.update,
        )
    pool = int(cfg.get("query_pool", 4))
    # Targets lie in the smallest prefix so that every size holds every query's target.
    q_all, _, targets = make_queries(
        corpus.prefix(sizes[0]), max(batches) * pool, int(cfg["q_tokens"]), float(cfg["noise"])
    )
    q_all = q_all.to(storage_dtype(cfg.get("query_dtype", "float32")))
    qt = int(cfg["q_tokens"])
    kw = kernel_kwargs(maxsim_topk, cfg.get("backend"), corpus.scale)
    cap = float(cfg.get("latency_cap_s", 10.0))
    slow: set[tuple[int, int]] = set()
    grid = [(n, b, k) for n in sizes for b in batches for k in ks]
    for n, b, k in tqdm(grid, desc="timing", unit="point", disable=None):
        if (b, k) in slow:
            rec.add(
                "skipped",
                {"n_segments": n, "batch": b, "k": k, "reason": f"p50 above {cap} s at a smaller n"},
            )
            continue
        c = corpus.prefix(n)
        d_kw = dict(kw)
        if c.scale is not None:
            d_kw["d_scale"] = c.scale
        last: dict[str, torch.Tensor] = {}

        def call(i: int, c=c, b=b, k=k, d_kw=d_kw, last=last) -> None:
            j = i % pool
            q = q_all[j * b * qt : (j + 1) * b * qt]
            qo = torch.arange(0, (b + 1) * qt, qt, dtype=torch.int64, device=device)
            last["idx"] = maxsim_topk(q, qo, c.tokens, c.offsets, k, **d_kw)[1]
            last["j"] = torch.tensor(j)

        times = time_calls(
            call,
            device,
            repeats=int(cfg["repeats"]),
            warmup=int(cfg["warmup"]),
            max_seconds=float(cfg["max_seconds_per_point"]),
        )
        p = percentiles(times)
        j = int(last["j"])
        # Sanity: a query aimed at a segment inside this prefix should find it in its top k.
        tg = targets[j * b : (j + 1) * b]
        hit = float((last["idx"] == tg[:, None]).any(1).float().mean())
        nbytes = c.nbytes()
        rec.add(
            "points",
            {
                "n_segments": n,
                "tokens": int(c.offsets[-1]),
                "corpus_gb": nbytes / 1e9,
                "batch": b,
                "k": k,
                "q_tokens": qt,
                "calls": len(times),
                "p50_ms": p["p50"] * 1e3,
                "p95_ms": p["p95"] * 1e3,
                "p99_ms": p["p99"] * 1e3,
                "mean_ms": p["mean"] * 1e3,
                "qps": b / p["p50"],
                "segments_per_s": n * b / p["p50"],
                "gb_per_s": nbytes / p["p50"] / 1e9,
                "tflops": 2.0 * b * qt * int(c.offsets[-1]) * int(cfg["dim"]) / p["p50"] / 1e12,
                "target_in_topk": hit,
            },
        )
        if p["p50"] > cap:
            slow.add((b, k))
    rec.put("growth", growth(rec.results.get("points", [])))


def growth(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (batch, k): latency at the smallest and largest corpus and the log-log slope between sizes."""
    out = []
    for b, k in sorted({(p["batch"], p["k"]) for p in points}):
        pts = sorted((p for p in points if p["batch"] == b and p["k"] == k), key=lambda p: p["n_segments"])
        if not pts:
            continue
        row = {
            "batch": b,
            "k": k,
            "n_min": pts[0]["n_segments"],
            "ms_min": pts[0]["p50_ms"],
            "n_max": pts[-1]["n_segments"],
            "ms_max": pts[-1]["p50_ms"],
            "exponent": None,
            "us_per_1k_segments": pts[-1]["p50_ms"] * 1e3 / (pts[-1]["n_segments"] / 1e3),
        }
        if len(pts) >= 2:
            x = np.log([p["n_segments"] for p in pts])
            y = np.log([p["p50_ms"] for p in pts])
            row["exponent"] = float(np.polyfit(x, y, 1)[0])
        out.append(row)
    return out


def tables(results: dict[str, Any]) -> list[Table]:
    pts = results.get("points", [])
    return [
        Table(
            "Search latency and throughput (maxsim_topk over the whole corpus, precomputed query vectors)",
            [
                Column("n_segments", "segments", ","),
                Column("tokens", "tokens", ","),
                Column("corpus_gb", "GB", ".3f"),
                Column("batch", "batch"),
                Column("k", "k"),
                Column("p50_ms", "p50 ms", ".2f"),
                Column("p95_ms", "p95 ms", ".2f"),
                Column("p99_ms", "p99 ms", ".2f"),
                Column("qps", "QPS", ",.1f"),
                Column("gb_per_s", "GB/s", ".1f"),
                Column("tflops", "TFLOP/s", ".3f"),
                Column("target_in_topk", "target@k", ".2f"),
            ],
            pts,
        ),
        Table(
            "How cost grows with the corpus (p50 latency ~ segments^exponent)",
            [
                Column("batch", "batch"),
                Column("k", "k"),
                Column("n_min", "from segments", ","),
                Column("ms_min", "p50 ms", ".2f"),
                Column("n_max", "to segments", ","),
                Column("ms_max", "p50 ms", ".2f"),
                Column("exponent", "exponent", ".2f"),
                Column("us_per_1k_segments", "us per 1k segments", ".1f"),
            ],
            results.get("growth", []),
        ),
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = results.get("points", [])
    if not pts:
        return []
    files = []
    ks = sorted({p["k"] for p in pts})
    k0 = ks[0]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for b in sorted({p["batch"] for p in pts}):
        sel = sorted((p for p in pts if p["batch"] == b and p["k"] == k0), key=lambda p: p["n_segments"])
        x = [p["n_segments"] for p in sel]
        line = ax.plot(x, [p["p50_ms"] for p in sel], "o-", label=f"batch {b} p50")[0]
        ax.plot(x, [p["p99_ms"] for p in sel], ":", color=line.get_color(), label=f"batch {b} p99")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="corpus size (segments)",
        ylabel="latency per call (ms)",
        title=f"Search latency vs corpus size (k={k0})",
    )
    sizes = sorted({p["n_segments"] for p in pts})
    ax.set_xticks(sizes, [_short(n) for n in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(out_dir / "latency_vs_corpus.png")
    fig.savefig(files[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for n in sorted({p["n_segments"] for p in pts}):
        sel = sorted((p for p in pts if p["n_segments"] == n and p["k"] == k0), key=lambda p: p["batch"])
        ax.plot([p["batch"] for p in sel], [p["qps"] for p in sel], "o-", label=f"{n:,} segments")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="query batch size",
        ylabel="queries per second (at p50)",
        title=f"Throughput vs query batch (k={k0})",
    )
    bs = sorted({p["batch"] for p in pts})
    ax.set_xticks(bs, [str(b) for b in bs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(out_dir / "throughput_vs_batch.png")
    fig.savefig(files[-1])
    plt.close(fig)
    return files


def _short(n: int) -> str:
    for div, suffix in ((10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return str(n)
