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
from maxsim.bench.config import ConfigError
from maxsim.bench.corpus import make_corpus, make_queries, storage_dtype
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.timing import resolve_device, time_calls, torch_threads
from tqdm import tqdm

from maxsim.summary import percentiles

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


MODES = ("kernel", "engine")


def run(rec: Run) -> None:
    with torch_threads(int(rec.config.get("threads", 0))):
        _run(rec)


def _run(rec: Run) -> None:
    cfg = rec.config
    device = resolve_device(cfg.get("device", "auto"))
    sizes = sorted(int(n) for n in cfg["corpus_sizes"])
    modes = list(cfg.get("modes", ["kernel"]))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ConfigError(f"unknown search mode(s) {bad}; expected some of {list(MODES)}")
    if "engine" in modes and cfg["dtype"] not in ("float16", "bfloat16", "float32"):
        raise ConfigError(
            f"modes=engine needs a store dtype (float16, bfloat16, float32), not {cfg['dtype']!r}"
        )
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
    batches = [int(b) for b in cfg["batch_sizes"]]
    pool = int(cfg.get("query_pool", 4))
    # Targets lie in the smallest prefix so that every size holds every query's target.
    q_all, _, targets = make_queries(
        corpus.prefix(sizes[0]), max(batches) * pool, int(cfg["q_tokens"]), float(cfg["noise"])
    )
    q_all = q_all.to(storage_dtype(cfg.get("query_dtype", "float32")))
    timer = _Timer(rec, cfg, device, q_all, targets, pool)
    try:
        if "kernel" in modes:
            _kernel_mode(timer, corpus, sizes)
        if "engine" in modes:
            _engine_mode(timer, corpus, sizes, rec.dir / "index")
    finally:
        timer.bar.close()
    rec.put("growth", growth(rec.results.get("points", [])))


class _Timer:
    """Times every (batch, k) of the config at one corpus size and records the points."""

    def __init__(self, rec: Run, cfg: dict[str, Any], device: torch.device, q_all, targets, pool: int):
        self.rec, self.cfg, self.device = rec, cfg, device
        self.q_all, self.targets, self.pool = q_all, targets, pool
        self.qt = int(cfg["q_tokens"])
        self.batches = [int(b) for b in cfg["batch_sizes"]]
        self.ks = [int(k) for k in cfg["ks"]]
        self.cap = float(cfg.get("latency_cap_s", 10.0))
        self.slow: set[tuple[str, int, int]] = set()
        n_sizes = len(cfg["corpus_sizes"]) * len(cfg.get("modes", ["kernel"]))
        self.bar = tqdm(
            total=n_sizes * len(self.batches) * len(self.ks), desc="timing", unit="point", disable=None
        )

    def batch(self, i: int, b: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        j = i % self.pool
        return self.q_all[j * b * self.qt : (j + 1) * b * self.qt], self.targets[j * b : (j + 1) * b], j

    def size(self, mode: str, n: int, n_tokens: int, nbytes: int, search) -> None:
        """``search(q, b, k) -> indices (b, k)`` of segments (prefix order) for a batch of b queries."""
        for b in self.batches:
            for k in self.ks:
                self.bar.update()
                if (mode, b, k) in self.slow:
                    reason = f"p50 above {self.cap} s at a smaller corpus"
                    self.rec.add(
                        "skipped", {"mode": mode, "n_segments": n, "batch": b, "k": k, "reason": reason}
                    )
                    continue
                last: dict[str, Any] = {}

                def call(i: int, b=b, k=k, last=last) -> None:
                    q, tg, _ = self.batch(i, b)
                    last["idx"], last["tg"] = search(q, b, k), tg

                times = time_calls(
                    call,
                    self.device,
                    repeats=int(self.cfg["repeats"]),
                    warmup=int(self.cfg["warmup"]),
                    max_seconds=float(self.cfg["max_seconds_per_point"]),
                )
                p = percentiles(times)
                # Sanity: every query is aimed at a segment of the corpus; it should be in the top k.
                hit = float((last["idx"].cpu() == last["tg"].cpu()[:, None]).any(1).float().mean())
                self.rec.add(
                    "points",
                    {
                        "mode": mode,
                        "n_segments": n,
                        "tokens": n_tokens,
                        "corpus_gb": nbytes / 1e9,
                        "batch": b,
                        "k": k,
                        "q_tokens": self.qt,
                        "calls": len(times),
                        "p50_ms": p["p50"] * 1e3,
                        "p95_ms": p["p95"] * 1e3,
                        "p99_ms": p["p99"] * 1e3,
                        "mean_ms": p["mean"] * 1e3,
                        "qps": b / p["p50"],
                        "segments_per_s": n * b / p["p50"],
                        "gb_per_s": nbytes / p["p50"] / 1e9,
                        "tflops": 2.0 * b * self.qt * n_tokens * int(self.cfg["dim"]) / p["p50"] / 1e12,
                        "target_in_topk": hit,
                    },
                )
                if p["p50"] > self.cap:
                    self.slow.add((mode, b, k))


def _kernel_mode(timer: _Timer, corpus, sizes: list[int]) -> None:
    """maxsim_topk over each prefix of the corpus, on the corpus' device (int8 / fp8 storage with its
    per-token scales)."""
    from maxsim.kernels import maxsim_topk

    backend = timer.cfg.get("backend")
    backend = None if backend in (None, "", "auto") else backend
    qt, device = timer.qt, timer.device
    for n in sizes:
        c = corpus.prefix(n)

        def search(q, b, k, c=c):
            qo = torch.arange(0, (b + 1) * qt, qt, dtype=torch.int64, device=device)
            return maxsim_topk(q, qo, c.tokens, c.offsets, k, backend=backend, d_scale=c.scale)[1]

        timer.size("kernel", n, int(c.offsets[-1]), c.nbytes(), search)


def _engine_mode(timer: _Timer, corpus, sizes: list[int], root: Path) -> None:
    """Engine.search_vectors over an Arrow store grown to each size by one committed part per step.

    Segment i is stored as video ``synthetic/v{i // 100}.mp4`` at [10 (i % 100), 10 (i % 100) + 10) s,
    so segment ids follow corpus order and hits map back to corpus indices.
    """
    from maxsim.engine import Engine
    from maxsim.index import SegmentRecord, Store

    dim = int(timer.cfg["dim"])
    store = Store.create(root, {"name": "synthetic", "dim": dim}, dim, timer.cfg["dtype"])
    engine = None
    done = 0
    offsets = corpus.offsets.cpu()
    for n in sizes:
        tokens = corpus.tokens[int(offsets[done]) : int(offsets[n])].cpu()
        base_row = int(offsets[done])
        with store.writing():
            base = store.manifest()
            writer = store.new_part()
            for i in range(done, n):
                lo, hi = int(offsets[i]) - base_row, int(offsets[i + 1]) - base_row
                t0 = 10.0 * (i % 100)
                writer.add(
                    i,
                    SegmentRecord(
                        f"synthetic/v{i // 100:05d}.mp4", "", "", t0, t0 + 10.0, [], None, tokens[lo:hi]
                    ),
                )
            store.commit(base, [writer.close()], next_segment_id=n, op="ingest")
        done = n
        engine = Engine(root) if engine is None else engine
        engine.refresh()

        def search(q, b, k, engine=engine):
            qs = [x.float().cpu() for x in q.split(timer.qt)]
            hits = engine.search_vectors(qs, k)
            return torch.tensor([[h.segment_id for h in hs] + [-1] * (k - len(hs)) for hs in hits])

        nbytes = int(offsets[n]) * dim * storage_dtype(timer.cfg["dtype"]).itemsize
        timer.size("engine", n, int(offsets[n]), nbytes, search)


def growth(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (batch, k): latency at the smallest and largest corpus and the log-log slope between sizes."""
    out = []
    for mode, b, k in sorted({(p.get("mode", "kernel"), p["batch"], p["k"]) for p in points}):
        sel = (p for p in points if p.get("mode", "kernel") == mode and p["batch"] == b and p["k"] == k)
        pts = sorted(sel, key=lambda p: p["n_segments"])
        if not pts:
            continue
        row = {
            "mode": mode,
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
            "Search latency and throughput (precomputed query vectors, whole corpus scored)",
            [
                Column("mode", "mode"),
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
            note="kernel: maxsim.kernels.maxsim_topk on the corpus in memory; engine: Engine.search_vectors "
            "over the Arrow store (memory-mapped parts, hits built). Latency is per call of a batch; "
            "QPS = batch / p50; target@k: share of queries whose target segment is in the top k.",
        ),
        Table(
            "How cost grows with the corpus (p50 latency ~ segments^exponent)",
            [
                Column("mode", "mode"),
                Column("batch", "batch"),
                Column("k", "k"),
                Column("n_min", "from segments", ","),
                Column("ms_min", "p50 ms", ".2f"),
                Column("n_max", "to segments", ","),
                Column("ms_max", "p50 ms", ".2f"),
                Column("exponent", "exponent", ".2f"),
                Column("us_per_1k_segments", "us per 1k segments", ".1f"),
            ],
            results.get("growth") or growth(pts),
        ),
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    pts = results.get("points", [])
    if not pts:
        return []
    k0 = min(p["k"] for p in pts)
    return [
        _log_plot(
            out_dir / "latency_vs_corpus.png", pts, k0, series="batch", x="n_segments", y="p50_ms",
            whisker="p95_ms", label=lambda mode, b: f"{mode} batch {b}", xlabel="corpus size (segments)",
            ylabel="latency per call (ms)", title=f"Search latency vs corpus size (k={k0})",
        ),
        _log_plot(
            out_dir / "throughput_vs_batch.png", pts, k0, series="n_segments", x="batch", y="qps",
            label=lambda mode, n: f"{mode} {_short(n)} segments", xlabel="query batch size",
            ylabel="queries per second (at p50)", title=f"Throughput vs query batch (k={k0})",
        ),
    ]  # fmt: skip


def _log_plot(
    path: Path,
    pts: list[dict[str, Any]],
    k: int,
    series: str,
    x: str,
    y: str,
    label,
    xlabel: str,
    ylabel: str,
    title: str,
    whisker: str | None = None,
) -> Path:
    """Log-log lines of ``y`` against ``x`` at top-``k``, one per mode (kernel: solid, engine: dashed) and
    value of ``series`` (one colour per value), with a bar from ``y`` up to ``whisker`` at each point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in pts if p["k"] == k]
    modes = sorted({p.get("mode", "kernel") for p in pts}, key=lambda m: MODES.index(m) if m in MODES else 9)
    values = sorted({p[series] for p in pts})
    colour = {v: f"C{i % 10}" for i, v in enumerate(values)}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for mode in modes:
        for v in values:
            sel = [p for p in pts if p.get("mode", "kernel") == mode and p[series] == v]
            if sel:
                sel.sort(key=lambda p: p[x])
                style = "o-" if mode == "kernel" else "s--"
                xs, ys = [p[x] for p in sel], [p[y] for p in sel]
                ax.plot(xs, ys, style, color=colour[v], label=label(mode, v))
    if whisker:
        ax.plot([], [], " ", label=f"({y.split('_')[0]}; bars: {whisker.split('_')[0]})")
        for p in pts:
            ax.plot([p[x]] * 2, [p[y], p[whisker]], "-", color=colour[p[series]], alpha=0.5)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    ticks = sorted({p[x] for p in pts})
    ax.set_xticks(ticks, [_short(t) for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 20, 300 rather than powers of ten
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(n: int) -> str:
    for div, suffix in ((10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return str(n)
