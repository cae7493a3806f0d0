"""``maxsim-bench scale``: pruned vs exact search, token reduction at ingest, Ray ingest and sharded search.

A preset (``configs/bench/scale.toml``) holds up to three sections, each a table measured by
:mod:`maxsim.bench.scale_bench`: ``pooling`` (storage and retrieval agreement of token reduction settings),
``pruning`` (recall, bytes read and latency of the pruned search against the exact search on a synthetic
index) and ``ray`` (Ray ingest throughput, index and hits compared with a single-process ingest, sharded
search). ``only`` picks some of the preset's sections. Each section is saved as soon as it is measured, so
Ctrl-C keeps the finished ones. Generated indexes and videos go to ``work_dir`` (default: ``work`` in the
output folder), removed at the end unless ``keep_work``.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from maxsim.bench.config import ConfigError
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.timing import torch_threads

SUMMARY = (0, 1, 2)
SECTIONS = ("pooling", "pruning", "ray")  # the order they run in: the cheap one first
_REQUIRED = {
    "pruning": (
        "n_segments",
        "frames",
        "tokens_per_frame",
        "dim",
        "n_concepts",
        "parts",
        "queries",
        "settings",
    ),
    "pooling": ("n_segments", "frames", "tokens_per_frame", "dim", "queries", "settings"),
    "ray": ("videos", "seconds", "workers"),
}


def selected_sections(cfg: dict[str, Any]) -> list[str]:
    """The sections to run: those of the preset, narrowed to ``only`` when it names any."""
    present = [s for s in SECTIONS if isinstance(cfg.get(s), dict)]
    only = cfg.get("only") or []
    if isinstance(only, str):
        only = [only]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"only: unknown section(s) {unknown}; sections are {list(SECTIONS)}")
    missing = [s for s in only if s not in present]
    if missing:
        raise ConfigError(
            f"only: the preset has no {', '.join(missing)} section; it has {present or 'none'} "
            "(add the table with --config, or choose another preset)"
        )
    chosen = [s for s in present if not only or s in only]
    if not chosen:
        raise ConfigError(f"nothing to run: the preset defines none of the sections {list(SECTIONS)}")
    return chosen


def _keyword_names(func: Any, skip: int) -> set[str] | None:
    """Keyword arguments of ``func`` after its first ``skip`` parameters (None: it takes any)."""
    params = list(inspect.signature(func).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_settings(section: str, settings: Any, func: Any, skip: int, example: str) -> None:
    """Refuse settings that are not a non-empty list of tables of ``func``'s keyword arguments."""
    if not isinstance(settings, list) or not settings or not all(isinstance(s, dict) for s in settings):
        raise ConfigError(
            f"{section}.settings must be a non-empty list of tables of keyword settings, e.g. "
            f"settings = [{example}]; got {settings!r}"
        )
    allowed = _keyword_names(func, skip)
    if allowed is None:
        return
    for s in settings:
        bad = sorted(set(s) - allowed)
        if bad:
            raise ConfigError(
                f"{section}.settings: {s} has unknown key(s) {bad}; {func.__qualname__} takes "
                f"{', '.join(sorted(allowed))}"
            )


def check_config(cfg: dict[str, Any], sections: list[str]) -> None:
    """Refuse a section that lacks required keys or has malformed settings, before anything is measured."""
    from maxsim.encoders.reduce import reduce_tokens
    from maxsim.search.prune.searcher import PrunedSearcher

    for section in sections:
        missing = [k for k in _REQUIRED[section] if k not in cfg[section]]
        if missing:
            raise ConfigError(f"section {section} lacks the key(s) {missing}")
    if "pruning" in sections:
        # search(q, q_off, allowed, k, **setting)
        check_settings("pruning", cfg["pruning"]["settings"], PrunedSearcher.search, 5,
                       "{n_candidates = 500, nprobe = 4}")  # fmt: skip
    if "pooling" in sections:
        # reduce_tokens(tokens, n_frames, **setting)
        settings = cfg["pooling"]["settings"]
        check_settings("pooling", settings, reduce_tokens, 2, "{dedup = 0.95, factor = 2}")
        if any(s.get("factor", 1) != 1 for s in settings) and importlib.util.find_spec("scipy") is None:
            raise ConfigError("pooling settings with factor > 1 need SciPy: pip install -e '.[scale]' in the "
                              "maxsim checkout")
    if "ray" in sections:
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "the ray section needs Ray: pip install -e '.[ray]' in the maxsim checkout, or leave the "
                "section out "
                '(--set \'only=["pruning", "pooling"]\')'
            )
        workers = cfg["ray"]["workers"]
        if not isinstance(workers, list) or not all(isinstance(w, int) and w >= 1 for w in workers):
            raise ConfigError(f"ray.workers must be a list of positive integers, got {workers!r}")


def setting_keys(settings: list[dict[str, Any]]) -> list[str]:
    """The union of the settings' keys, in order of first appearance."""
    return list(dict.fromkeys(k for s in settings for k in s))


def _work_folder(rec: Run) -> Path:
    """The run's scratch folder: ``work`` in the output folder, or a new folder inside ``work_dir``."""
    given = rec.config.get("work_dir") or ""
    if not given:
        work = rec.dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        return work
    if not Path(given).is_dir():
        raise ConfigError(f"work_dir {given} is not a folder")
    # a fresh folder inside the given one, so that removing it never touches the user's files
    return Path(tempfile.mkdtemp(prefix="scale-bench-", dir=given))


def run(rec: Run) -> None:
    cfg = rec.config
    sections = selected_sections(cfg)
    check_config(cfg, sections)
    from maxsim.bench import scale_bench

    progress = sys.stderr.isatty()
    work = _work_folder(rec)
    rec.put("sections", sections)
    rec.put("work_dir", str(work))
    try:
        with torch_threads(int(cfg.get("threads", 0))):
            rec.put("torch_threads", torch.get_num_threads())
            for section in sections:
                part = dict(cfg[section])
                if section == "pooling":
                    res = scale_bench.bench_pooling(part, progress)
                    res["setting_keys"] = setting_keys(part["settings"])
                elif section == "pruning":
                    res = scale_bench.bench_pruning(part, work, progress)
                    res["setting_keys"] = setting_keys(part["settings"])
                else:
                    res = scale_bench.bench_ray(part, work, progress)
                rec.put(section, res)
    finally:
        if not cfg.get("keep_work", False):
            shutil.rmtree(work, ignore_errors=True)


_SHORT = {"n_candidates": "cand", "n_refine": "refine", "nprobe": "probe", "factor": "pool", "dedup": "dedup"}


def _num(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1000 and v % 1000 == 0:
        return f"{v // 1000}k"
    return str(v)


def _label(row: dict[str, Any], keys: list[str]) -> str:
    """A short point label for plots: ``cand=1k refine=100k probe=8``."""
    return " ".join(f"{_SHORT.get(k, k)}={_num(row[k])}" for k in keys if row.get(k) is not None) or "none"


def _annotate(ax: Any, xs: list[float], ys: list[float], labels: list[str]) -> None:
    """Labels beside the points, staggered up and down so that close points stay readable."""
    for i, (x, y, text) in enumerate(zip(xs, ys, labels, strict=True)):
        ax.annotate(text, (x, y), fontsize=7, xytext=(5, 6 if i % 2 == 0 else -11),
                    textcoords="offset points")


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _times(v: float) -> str:
    return f"{v:.1f}x"


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _centroids(counts: list[int]) -> str:
    if counts and len(set(counts)) == 1:
        return f"{counts[0]:,} in each of {len(counts)} parts"
    return ", ".join(f"{c:,}" for c in counts)


def pruning_table(results: dict[str, Any]) -> Table:
    p = results.get("pruning")
    if not p:
        return Table("Pruned vs exact search", [])
    c = p["corpus"]
    ex = p["exact"]
    keys = p.get("setting_keys", [])
    rows = [dict(r, speedup_p50=ex["p50_ms"] / r["p50_ms"] if r["p50_ms"] else None) for r in p["pruned"]]
    cols = [Column(k, k, ",") for k in keys] + [
        Column("recall@10", "recall@10", ".3f"),
        Column("min_recall@10", "min recall@10", ".1f"),
        Column("top1_agreement", "top-1 agreement", ".3f"),
        Column("bytes_fraction", "bytes read", _pct),
        Column("qps", "QPS", ".1f"),
        Column("p50_ms", "p50 ms", ".0f"),
        Column("p99_ms", "p99 ms", ".0f"),
        Column("speedup_p50", "speed-up (p50)", _times),
    ]
    threads = results.get("torch_threads")
    note = (
        f"Tokens {_size(p['token_bytes'])} (written in {p['write_s']:.0f} s); prune index "
        f"{_size(p['prune_index_bytes'])} ({100 * p['prune_index_overhead']:.1f}% of the tokens), "
        f"centroids per part: {_centroids(p['n_centroids_per_part'])}, "
        + (f"{p['nbits']}-bit residual codes, " if p.get("nbits") else "no residual codes, ")
        + f"built in {p['prune_build_s']:.0f} s"
        + (" by an earlier run (this run reused its index)" if p.get("index_reused") else "")
        + ". "
        f"Exact search: {ex['qps']:.2f} QPS, p50 {ex['p50_ms']:.0f} ms, p99 {ex['p99_ms']:.0f} ms"
        + (f" ({threads} torch threads)" if threads else "")
        + f". The exact top hit is the query's target segment for {100 * p['target_top1_exact']:.0f}% of the "
        "queries. Recall@10 and top-1 agreement compare the pruned top 10 with the exact top 10 of the same "
        "index; bytes read: candidate tokens, residual codes, inverted lists, bags and centroids against the "
        "tokens an exact search reads; one query per call, scoring only."
    )
    title = (
        f"Pruned vs exact search: {c['n_segments']:,} segments x {c['frames'] * c['tokens_per_frame']} "
        f"tokens x {c['dim']} d (float16), {p['parts']} parts, {p['queries']} queries of "
        f"{p['query_tokens']} tokens, k={p['k']}"
    )
    return Table(title, cols, rows, note=note)


def pooling_table(results: dict[str, Any]) -> Table:
    p = results.get("pooling")
    if not p:
        return Table("Token reduction", [])
    c = p["corpus"]
    extra = [k for k in p.get("setting_keys", []) if k not in ("dedup", "factor")]
    cols = (
        [Column("dedup", "dedup", "g"), Column("factor", "pool factor", "g")]
        + [Column(k, k, "g") for k in extra]
        + [
            Column("tokens_per_segment", "tokens/segment", ".0f"),
            Column("reduction", "reduction", _times),
            Column("mb_per_hour", f"MB/hour ({c['dim']} d)", ".0f"),
            Column("mb_per_hour_at_dim320", "MB/hour at 320 d", ".0f"),
            Column("recall@10", "recall@10", ".3f"),
            Column("top1_agreement", "top-1 agreement", ".3f"),
            Column("reduce_ms_per_segment", "ms/segment", ".1f"),
        ]
    )
    title = (
        f"Token reduction: {c['n_segments']} segments x {c['frames']} frames x {c['tokens_per_frame']} "
        f"tokens x {c['dim']} d, {p['queries']} queries; agreement with the unreduced segments"
    )
    note = (
        "dedup '-': no duplicate dropping. Storage per hour: 10 s segments (360 per hour) in float16, at the "
        "benchmark's dim and at a ColQwen-like 320 d with the same tokens per segment. ms/segment: CPU time "
        "of the reduction."
    )
    return Table(title, cols, p["settings"], note=note)


def ray_table(results: dict[str, Any]) -> Table:
    r = results.get("ray")
    if not r:
        return Table("Ray ingest", [])
    cpus = f"{r['cluster_cpus']:.0f}" if r.get("cluster_cpus") is not None else "?"
    title = (
        f"Ray ingest: {r['videos']} videos, {r['video_seconds']:.0f} s of video, fixed 2 s segments, "
        f"local Ray with {cpus} CPUs (start-up {r['ray_startup_s']:.1f} s, not counted)"
    )
    cols = [
        Column("encoder", "encoder"),
        Column("mode", "mode"),
        Column("seconds", "seconds", ".1f"),
        Column("video_s_per_s", "video s / s", ".1f"),
        Column("first_clip_s", "first clip after s", ".1f"),
        Column("video_s_per_s_after_first", "video s / s after it", ".1f"),
        Column("segments", "segments"),
    ]
    note = (
        f"Same index contents as single-process: {r['same_index']}; same hits: {r['same_hits']}; sharded "
        f"search ({r['shards']} shards over {r['parts']} parts) same hits: {r['sharded_same_hits']}. The "
        "second encoder waits per clip (an accelerator-bound model's stand-in); first clip: pipeline "
        "start-up. Clips come out in input order, so those finished while the first was pending arrive at "
        "once: the rate after the first clip is flattered, and meaningless for a handful of clips (the smoke "
        "preset)."
    )
    return Table(title, cols, r["runs"], note=note)


def tables(results: dict[str, Any]) -> list[Table]:
    return [pruning_table(results), pooling_table(results), ray_table(results)]


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    if not results.get("pruning") and not results.get("pooling"):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[Path] = []
    p = results.get("pruning")
    if p and p.get("pruned"):
        rows = p["pruned"]
        keys = p.get("setting_keys", [])
        labels = [_label(r, keys) for r in rows]
        recall = [r["recall@10"] for r in rows]
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        xs = [100 * r["bytes_fraction"] for r in rows]
        ax.plot(xs, recall, "o")
        _annotate(ax, xs, recall, labels)
        ax.axhline(1.0, color="grey", ls=":", lw=1)
        ax.axhline(0.99, color="C2", ls="--", lw=1, label="recall@10 0.99")
        ax.legend(fontsize=8, loc="lower right")
        title = f"Pruned search: recall vs bytes read ({p['corpus']['n_segments']:,} segments)"
        ax.set(xlabel="bytes read, % of the exact search", ylabel="recall@10 vs exact", title=title)
        ax.margins(0.2, 0.1)
        ax.grid(True, alpha=0.3)
        files.append(_save(plt, fig, out_dir / "scale_pruning_recall_vs_bytes.png"))

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        ax.plot(recall, [r["qps"] for r in rows], "o", label="pruned")
        _annotate(ax, recall, [r["qps"] for r in rows], labels)
        ax.axhline(
            p["exact"]["qps"], color="C3", ls="--", label=f"exact search ({p['exact']['qps']:.2f} QPS)"
        )
        ax.set_yscale("log")
        ax.set(xlabel="recall@10 vs exact", ylabel="queries / s (one query per call)",
               title="Pruned search: QPS vs recall")  # fmt: skip
        ax.margins(0.2, 0.1)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        files.append(_save(plt, fig, out_dir / "scale_pruning_qps_vs_recall.png"))
    p = results.get("pooling")
    if p and p.get("settings"):
        rows = p["settings"]
        keys = p.get("setting_keys", [])
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        xs, ys = [r["mb_per_hour_at_dim320"] for r in rows], [r["recall@10"] for r in rows]
        ax.plot(xs, ys, "o")
        _annotate(ax, xs, ys, [_label(r, keys) for r in rows])
        ax.set(xlabel="MB per hour of video at 320 d (float16, 10 s segments)",
               ylabel="recall@10 vs unreduced", title="Token reduction: agreement vs storage")  # fmt: skip
        ax.margins(0.2, 0.1)
        ax.grid(True, alpha=0.3)
        files.append(_save(plt, fig, out_dir / "scale_pooling_recall_vs_storage.png"))
    return files
