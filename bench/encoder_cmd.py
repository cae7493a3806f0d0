"""``maxsim-bench encoder``: ColQwen3 encoder throughput against the per-clip visual-token budget, or (a
preset with a ``families`` table) every encoder family side by side at its real size with random weights.

The measuring is :mod:`maxsim.bench.encoder_bench`'s: the model (``tiny``, ``4b-random`` or a checkpoint) is
loaded once, then for each budget of ``token_budgets`` the same synthetic decoded clips go through
``encode_clips`` (and the queries through ``encode_texts``) with ``max_visual_tokens`` set to it. Each budget
is one row: clips/s, visual tokens per clip, seconds per minute of video, queries/s, FLOPs per clip (of
this model and of the 4B architecture) and, on a GPU, peak memory. A finished budget is saved at once, so an
interrupted sweep keeps it.

Families (:mod:`maxsim.bench.encoder_families`): one row per encoder family and setting (SigLIP 2, CLIP,
ColQwen3-4B, Qwen3-VL-Embedding-2B, Qwen3-VL-Reranker-2B per hit): clips/s and seconds per minute of video
measured on this machine, FLOPs per clip, and a FLOP-based GPU estimate.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from maxsim.bench import encoder_bench, encoder_families
from maxsim.bench.config import ConfigError, build
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.timing import torch_threads
from tqdm import tqdm

SUMMARY = 0
_OWN = {"description", "token_budgets", "families"}


def bench_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The preset as :func:`maxsim.bench.encoder_bench.check_config` takes it (TOML has no null:
    ``dtype = "auto"`` and ``max_frames = 0`` mean "the default")."""
    out = {k: v for k, v in cfg.items() if k not in _OWN}
    if out.get("dtype") in ("auto", ""):
        out["dtype"] = None
    if not out.get("max_frames"):
        out["max_frames"] = None
    budgets = cfg.get("token_budgets") or []
    if not budgets or any(not isinstance(b, int) or b < 1 for b in budgets):
        raise ConfigError(f"token_budgets must be a list of positive integers, got {budgets!r}")
    out["max_visual_tokens"] = max(budgets)
    return build("encoder benchmark config", encoder_bench.check_config, out)


def run(rec: Run) -> None:
    families = rec.config.get("families") or {}
    if families:
        run_families(rec, families)
        return
    cfg = bench_config(rec.config)
    budgets = list(rec.config["token_budgets"])
    with torch_threads(int(cfg["threads"])), tempfile.TemporaryDirectory(prefix="encoder-bench-") as tmp:
        t0 = time.perf_counter()
        base = build(f"model {cfg['model']!r}", encoder_bench.load_bench_encoder, cfg, Path(tmp))
        rec.put("setup", {"encoder": base.name, "device": str(base.device),
                          "load_s": round(time.perf_counter() - t0, 3)})  # fmt: skip
        for budget in tqdm(budgets, desc="token budgets", unit="budget", disable=None):
            enc = base.with_settings(max_visual_tokens=int(budget))
            r = encoder_bench.measure(enc, {**cfg, "max_visual_tokens": int(budget)})
            r.pop("config")
            rec.add("budgets", {"token_budget": int(budget), **r})


def run_families(rec: Run, families: dict[str, Any]) -> None:
    """The families comparison (see the module docstring); each row is saved as it is finished."""
    cfg = build("encoder families config", encoder_families.check_config, dict(families))
    with torch_threads(int(cfg["threads"])):
        rec.put("families_setup", {"gpu_name": cfg["gpu_name"], "gpu_tflops": cfg["gpu_tflops"],
                                   "gpu_utilisation": cfg["gpu_utilisation"],
                                   "segment_seconds": cfg["segment_seconds"], "frame_size": cfg["frame_size"],
                                   "rerank_hits": cfg["rerank_hits"]})
        encoder_families.run_rows(cfg, on_row=lambda row: rec.add("families", row))


def _family_tables(results: dict[str, Any]) -> list[Table]:
    rows = results.get("families") or []
    if not rows:
        return []
    setup = results.get("families_setup", {})
    cols = [
        Column("row", "encoder"),
        Column("frames", "frames/segment"),
        Column("tokens", "vectors or visual tokens/segment"),
        Column("gflops", "GFLOP/segment", ",.0f"),
        Column("dtype", "dtype"),
        Column("clips_per_s", "segments/s", ".3g"),
        Column("seconds_per_unit", "CPU s per unit", ",.1f"),
        Column("unit", "unit"),
        Column("achieved_tflops", "TFLOP/s", ".3g"),
        Column("queries_per_s", "queries/s", ".3g"),
        Column("gpu_seconds_per_unit", "GPU s per unit (est.)", ".3g"),
        Column("measured", "measured"),
        Column("load_avg_1m", "load avg"),
    ]
    gpu = (f"{setup.get('gpu_name', '?')} at {100 * setup.get('gpu_utilisation', 0):.0f}% of "
           f"{setup.get('gpu_tflops', '?')} TFLOP/s")
    return [Table(
        "Encoder families at their real sizes (random weights)", cols, rows,
        note=f"one segment = {setup.get('segment_seconds', '?')} s of video sampled as each row says, frames "
        f"decoded at {setup.get('frame_size', '?')} then sized for the encoder (not timed); reranker rows: "
        f"the unit is {setup.get('rerank_hits', '?')} re-ranked hits. Unmeasured rows: CPU time from the "
        f"FLOPs at the achieved rate of the measured row of the same architecture. GPU: FLOPs / ({gpu}), an "
        "estimate, not a measurement.",
    )]


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in r.items() if not isinstance(v, (dict, list))},
        "visual_tokens": r["visual_tokens_per_clip"]["mean"],
    }


def tables(results: dict[str, Any]) -> list[Table]:
    rows = [_row(r) for r in results.get("budgets", [])]
    if not rows:
        return _family_tables(results)
    setup = results.get("setup", {})
    cols = [
        Column("token_budget", "token budget"),
        Column("visual_tokens", "visual tokens/clip", ".1f"),
        Column("sequence_tokens_per_clip", "sequence tokens/clip", ".1f"),
        Column("clips_per_s", "clips/s", ".3g"),
        Column("seconds_per_video_minute", "s per video minute", ".3g"),
        Column("video_seconds_per_s", "x real time", ".3g"),
        Column("preprocess_s_per_clip", "preprocess s/clip", ".3g"),
        Column("queries_per_s", "queries/s", ".3g"),
        Column("gflops_per_clip", "GFLOP/clip", ".3g"),
        Column("achieved_tflops", "TFLOP/s", ".3g"),
        Column("gflops_per_clip_4b", "GFLOP/clip (4B)", ",.0f"),
        Column("peak_memory_gib", "peak GiB", ".2f"),
    ]
    return [
        Table(
            f"Encoder throughput per visual-token budget ({setup.get('encoder', '?')} on "
            f"{setup.get('device', '?')})",
            cols,
            rows,
            note="clips: synthetic decoded frames (decoding not included); x real time: seconds of video "
            "encoded per second; GFLOP/clip (4B): the same clips through the Qwen3-VL-4B architecture, so "
            "seconds ~ FLOPs / achieved FLOP/s estimates the full model from this one.",
        )
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    rows = [_row(r) for r in results.get("budgets", [])]
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows.sort(key=lambda r: r["token_budget"])
    x = [r["token_budget"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(x, [r["clips_per_s"] for r in rows], "o-", color="tab:blue", label="clips/s")
    for r in rows:
        ax.annotate(f"{r['visual_tokens']:.0f} tok", (r["token_budget"], r["clips_per_s"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)  # fmt: skip
    device = results.get("setup", {}).get("device", "?")
    title = f"Encoder throughput vs token budget ({device})"
    ax.set(xlabel="max visual tokens per clip", ylabel="clips/s", title=title)
    if len(x) > 1 and max(x) / max(min(x), 1) >= 8:
        ax.set_xscale("log", base=2)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "encoder_throughput.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
