"""``maxsim-bench eval``: retrieval quality and query latency of the engine on a ground truth.

The videos named by the ground truth are ingested into an index (fresh in the run folder unless ``index``
names one to reuse) with the configured encoder, segmenter and frame sampler; every query is searched one
at a time (its latency timed, text encoding included) and its ranked hits are written as predictions
(``predictions.jsonl``, ``[video, start, end, score]`` rows). With ``moments`` on (default), the same
hits are also assembled into moments (:func:`maxsim.search.moments.assemble`: adjacent segments that
score within ``moment_margin`` of the best merged, their ends refined from the matching frames, temporal
NMS) and scored as a second set of predictions (``moment_predictions.jsonl``, ``metrics_moments``), so
segments and moments are compared on the same searches. With ``predictions`` set, an existing predictions
file is scored instead and nothing is ingested or searched (no moments: they need the hits' frames).

With a ``transcript_encoder`` the videos' subtitles are indexed too, the main queries are searched with
the engine's default channels (fused), and each of ``channels`` is evaluated on the visual queries and on
the spoken-content ones (``ground_truth_spoken.jsonl`` beside the ground truth, or
``spoken_ground_truth``): see :mod:`maxsim.bench.spoken`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from maxsim.bench.config import ConfigError, build
from maxsim.bench.groundtruth import check_coverage, load_ground_truth, load_predictions, prediction_record
from maxsim.bench.metrics import GroundTruth, Prediction, evaluate
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.spoken import SPOKEN_GROUND_TRUTH, channel_runs
from tqdm import tqdm

from maxsim.summary import percentiles

SUMMARY = [0, 1]
PREDICTIONS = "predictions.jsonl"
MOMENT_PREDICTIONS = "moment_predictions.jsonl"


def newest_dataset(root: str | Path = "bench/out") -> Path | None:
    """ground_truth.jsonl of the newest ``maxsim-bench dataset`` run under ``root``, if any."""
    found = sorted(Path(root).glob("dataset-*/ground_truth.jsonl"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def ground_truth_path(cfg: dict[str, Any]) -> Path:
    """The configured ground truth, or the newest dataset run's when none is configured."""
    if cfg.get("ground_truth"):
        return Path(cfg["ground_truth"]).expanduser()
    p = newest_dataset()
    if p is None:
        raise ConfigError(
            "no ground truth: set ground_truth=PATH (QVHighlights JSONL or Charades-STA), "
            "or run `maxsim-bench dataset` first"
        )
    return p


def find_videos(gts: list[GroundTruth], folder: Path, exts: list[str]) -> tuple[dict[str, Path], list[str]]:
    """``{vid: file}`` for the ground truth's videos found in ``folder`` (``vid + ext``, then a search
    of its subfolders), and the vids not found."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    index: dict[str, Path] | None = None
    for vid in dict.fromkeys(g.vid for g in gts):
        hit = next((folder / f"{vid}{e}" for e in exts if (folder / f"{vid}{e}").is_file()), None)
        if hit is None:
            if index is None:
                index = {}
                for p in sorted(folder.rglob("*")):
                    if p.is_file() and p.suffix.lower() in exts:
                        index.setdefault(p.stem, p)
            hit = index.get(vid)
        if hit is None:
            missing.append(vid)
        else:
            found[vid] = hit
    return found, missing


def run(rec: Run) -> None:
    cfg = rec.config
    if int(cfg["k"]) < max(int(k) for k in cfg["ks"]):
        raise ConfigError(f"k={cfg['k']} hits per query cannot give R@{max(cfg['ks'])}: raise k or lower ks")
    gt_path = ground_truth_path(cfg)
    gts = load_ground_truth(gt_path, cfg.get("format", "auto"))
    rec.put(
        "ground_truth",
        {"path": str(gt_path.resolve()), "queries": len(gts), "videos": len({g.vid for g in gts})},
    )
    moment_preds: dict[str, list[Prediction]] | None = None
    if cfg.get("predictions"):
        preds = load_predictions(cfg["predictions"])
        latencies: list[float] = []
    else:
        preds, latencies, moment_preds = _search(rec, cfg, gts, gt_path)
    _score(rec, cfg, gts, preds, latencies)
    if moment_preds is not None:
        m = evaluate(moment_preds, gts, ks=[int(k) for k in cfg["ks"]], ious=[float(t) for t in cfg["ious"]])
        m.pop("per_query")
        rec.put("metrics_moments", {**m, "margin": float(cfg.get("moment_margin", 0.1))})


def _search(
    rec: Run, cfg: dict[str, Any], gts: list[GroundTruth], gt_path: Path
) -> tuple[dict[str, list[Prediction]], list[float], dict[str, list[Prediction]] | None]:
    from maxsim.encoders import load_encoder
    from maxsim.engine import Engine
    from maxsim.media import FrameSampler
    from maxsim.search.moments import assemble

    folder = Path(cfg["videos"]).expanduser() if cfg.get("videos") else gt_path.parent / "videos"
    if not folder.is_dir():
        raise ConfigError(f"video folder {folder} does not exist (set videos=FOLDER)")
    exts = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in cfg["video_ext"]]
    paths, missing = find_videos(gts, folder, exts)
    if missing:
        msg = f"{len(missing)} video(s) of {gt_path} not found in {folder}: {', '.join(missing[:5])}"
        if not cfg.get("skip_missing", False):
            raise ConfigError(msg + " (set skip_missing=true to evaluate without them; they count as misses)")
        print(f"warning: {msg}; their queries count as misses")
    rec.put("missing_videos", missing)

    from maxsim.errors import IndexError_
    from maxsim.media.segment import load_segmenter

    encoder = build(
        f"encoder {cfg['encoder']!r}", load_encoder, cfg["encoder"], **dict(cfg.get("encoder_kwargs") or {})
    )
    segmenter = build(f"segmenter {cfg['segmenter']!r}", load_segmenter, cfg["segmenter"])
    sampler = build("sampler", FrameSampler, **dict(cfg.get("sampler") or {}))
    index = Path(cfg["index"]).expanduser() if cfg.get("index") else rec.dir / "index"
    try:
        engine = Engine(
            index, encoder=encoder, segmenter=segmenter, sampler=sampler, batch_size=int(cfg["batch_size"]),
            transcript_encoder=cfg.get("transcript_encoder") or None,
        )
    except IndexError_ as e:
        raise ConfigError(f"index {index}: {e}") from e
    t0 = time.perf_counter()
    report = engine.ingest([str(p) for p in paths.values()])
    ingest_s = time.perf_counter() - t0
    video_s = sum(_duration(p) for p in paths.values())
    rec.put(
        "ingest",
        {
            "index": str(index),
            "encoder": encoder.name,
            "segmenter": engine.segmenter.name,
            "sampler": sampler.name,
            "videos": len(report.ingested),
            "skipped": len(report.skipped),
            "failed": [{"path": p, "reason": r} for p, r in report.failed],
            "segments": len(engine),
            "seconds": ingest_s,
            "video_seconds": video_s or None,
            "rtf": ingest_s / video_s if video_s else None,
        },
    )
    for p, r in report.failed:
        print(f"warning: could not ingest {p}: {r}")
    by_path = {str(p.resolve()): vid for vid, p in paths.items()}
    k = int(cfg["k"])
    queries = [g for g in gts if g.vid in paths or not missing]
    if queries:
        engine.search(queries[0].query, k=k)  # warm-up: first-call costs are not a query's latency
    preds: dict[str, list[Prediction]] = {}
    moments: dict[str, list[Prediction]] | None = {} if cfg.get("moments", True) else None
    margin = float(cfg.get("moment_margin", 0.1))
    latencies: list[float] = []
    try:
        with open(rec.dir / PREDICTIONS, "w", encoding="utf-8") as out, \
                open(rec.dir / MOMENT_PREDICTIONS, "w", encoding="utf-8") as mout:
            for g in tqdm(queries, desc="queries", unit="query", disable=None):
                t = time.perf_counter()
                hits = engine.search(g.query, k=k, thumbnails=False)
                dt = time.perf_counter() - t
                latencies.append(dt)
                rows = [(by_path.get(h.video, h.video), h.start, h.end, h.score) for h in hits]
                preds[g.qid] = rows
                out.write(json.dumps(prediction_record(g.qid, g.query, rows, latency_ms=dt * 1e3)) + "\n")
                out.flush()
                if moments is not None:
                    ms = assemble(hits, k, margin=margin)
                    moments[g.qid] = [(by_path.get(m.video, m.video), m.start, m.end, m.score) for m in ms]
                    mout.write(json.dumps(prediction_record(g.qid, g.query, moments[g.qid])) + "\n")
        if cfg.get("transcript_encoder"):
            spoken_path = Path(cfg.get("spoken_ground_truth") or gt_path.parent / SPOKEN_GROUND_TRUTH)
            spoken = load_ground_truth(spoken_path) if spoken_path.is_file() else []
            sets = {"visual": queries, "spoken": [g for g in spoken if g.vid in paths]}
            rec.put("channels", channel_runs(engine, sets, list(cfg.get("channels") or ["visual"]), k,
                                             [int(x) for x in cfg["ks"]], [0.5], by_path))
        if cfg.get("batch_size_queries", 0):
            texts = [g.query for g in queries]
            rec.put("batch_search", _batch_qps(engine, texts, k, int(cfg["batch_size_queries"])))
    except KeyboardInterrupt:
        _score(rec, cfg, [g for g in gts if g.qid in preds], preds, latencies, partial=True)
        raise
    if moments is None:
        (rec.dir / MOMENT_PREDICTIONS).unlink(missing_ok=True)
    return preds, latencies, moments


def _duration(path: Path) -> float:
    """Container duration of a video (0 when it cannot be probed; the ingest reports why)."""
    from maxsim.errors import VideoError
    from maxsim.media.video import probe

    try:
        return probe(path).duration
    except VideoError:
        return 0.0


def _batch_qps(engine: Any, texts: list[str], k: int, batch: int) -> dict[str, Any]:
    """Queries per second of ``search_batch`` in batches of ``batch`` over all queries."""
    t = time.perf_counter()
    for i in range(0, len(texts), batch):
        engine.search_batch(texts[i : i + batch], k=k)
    dt = time.perf_counter() - t
    return {"batch": batch, "queries": len(texts), "seconds": dt, "qps": len(texts) / dt if dt > 0 else None}


def _score(
    rec: Run,
    cfg: dict[str, Any],
    gts: list[GroundTruth],
    preds: dict[str, list[Prediction]],
    latencies: list[float],
    partial: bool = False,
) -> None:
    ks = [int(k) for k in cfg["ks"]]
    ious = [float(t) for t in cfg["ious"]]
    m = evaluate(preds, gts, ks=ks, ious=ious)
    per_query = m.pop("per_query")
    lat = percentiles(latencies, (50, 95, 99)) if latencies else {}
    rec.put(
        "metrics",
        {
            **m,
            "latency_ms": {k: v * 1e3 for k, v in lat.items()},
            "partial": partial,
            "queries_without_predictions": len(check_coverage(preds, gts)),
        },
    )
    rec.put("per_query", per_query)


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}"


def tables(results: dict[str, Any]) -> list[Table]:
    m = results.get("metrics")
    if not m:
        return []
    ious = sorted({key.split("IoU=")[1] for key in m["recall"]}, key=float)
    ks = sorted({int(key.split()[0][2:]) for key in m["recall"]})
    lat = m.get("latency_ms") or {}
    bs = results.get("batch_search") or {}
    summary = {
        "queries": m["n_queries"],
        "map": m["map"]["mean"],
        "miou": m["mean_iou_top1"],
        "p50": lat.get("p50"),
        "p95": lat.get("p95"),
        "qps": bs.get("qps"),
    }
    recall_rows = [{"iou": t, **{f"R@{k}": m["recall"][f"R@{k} IoU={t}"] for k in ks}} for t in ious]
    recall_rows.append({"iou": "video", **{f"R@{k}": m["video_recall"][f"R@{k}"] for k in ks}})
    map_rows = [{"iou": t, "ap": v} for t, v in m["map"].items() if t != "mean"]
    out = [
        Table(
            "Recall at k (%, corpus level) by IoU threshold",
            [Column("iou", "IoU")] + [Column(f"R@{k}", f"R@{k}", _pct) for k in ks],
            recall_rows,
            note="A query counts at IoU t when one of its top k hits is on the right video and overlaps a "
            "relevant window by IoU >= t; the `video` row asks only for the right video among the first k "
            "distinct videos.",
        ),
        Table(
            "Quality and latency",
            [
                Column("queries", "queries"),
                Column("map", "mAP % (IoU 0.5:0.95)", _pct),
                Column("miou", "mean IoU of top hit %", _pct),
                Column("p50", "p50 ms/query", ".2f"),
                Column("p95", "p95 ms/query", ".2f"),
                Column("qps", "search_batch QPS", ",.1f"),
            ],
            [summary],
            note="Latency: one engine.search call per query (text encoding included), after a warm-up query.",
        ),
        Table(
            "Average precision (%) by IoU threshold",
            [Column("iou", "IoU"), Column("ap", "AP", _pct)],
            map_rows,
        ),
    ]
    by_channel = results.get("channels")
    if by_channel:
        out.append(Table(
            "By channel (R@k and mAP %, IoU 0.5 for R@k)",
            [Column("channels", "channels"), Column("queries", "queries"), Column("n", "n")]
            + [Column(f"R@{k}", f"R@{k}", _pct) for k in ks]
            + [Column("map", "mAP %", _pct), Column("ms", "ms/query", ".1f")],
            by_channel,
            note="visual: colour queries; spoken: paraphrases of a subtitle line, relevant at the line's "
            "time. visual+transcript: the fused score (min-max normalised, weights 0.5 / 0.5).",
        ))
    mm = results.get("metrics_moments")
    if mm:
        rows = [{"iou": t, **{f"seg{k}": m["recall"][f"R@{k} IoU={t}"] for k in ks},
                 **{f"mom{k}": mm["recall"][f"R@{k} IoU={t}"] for k in ks}} for t in ious]
        rows.append({"iou": "mAP", "seg1": m["map"]["mean"], "mom1": mm["map"]["mean"]})
        rows.append({"iou": "mean IoU top 1", "seg1": m["mean_iou_top1"], "mom1": mm["mean_iou_top1"]})
        out.append(Table(
            "Segments against moments: recall at k (%) by IoU threshold",
            [Column("iou", "IoU")] + [Column(f"seg{k}", f"segments R@{k}", _pct) for k in ks]
            + [Column(f"mom{k}", f"moments R@{k}", _pct) for k in ks],
            rows,
            note=f"Moments: the same top-k hits of each query assembled into moments (adjacent segments "
            f"within {100 * mm['margin']:.0f}% of the best score merged, ends refined from the matching "
            "frames, temporal NMS). A scene cut into several segments becomes one moment, so high-IoU "
            "recall rises.",
        ))
    ing = results.get("ingest")
    if ing:
        cols = [
            Column("videos", "videos"),
            Column("segments", "segments"),
            Column("seconds", "seconds", ".2f"),
            Column("rtf", "RTF", ".4f"),
            Column("encoder", "encoder"),
            Column("segmenter", "segmenter"),
        ]
        out.append(Table("Ingest", cols, [ing]))
    return out


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    m = results.get("metrics")
    if not m:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ious = sorted({key.split("IoU=")[1] for key in m["recall"]}, key=float)
    ks = sorted({int(key.split()[0][2:]) for key in m["recall"]})
    groups = [(f"IoU {t}", [m["recall"][f"R@{k} IoU={t}"] for k in ks]) for t in ious]
    groups.append(("video", [m["video_recall"][f"R@{k}"] for k in ks]))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        xs = [i + (j - (len(ks) - 1) / 2) * width for i in range(len(groups))]
        vals = [100 * g[1][j] for g in groups]
        bars = ax.bar(xs, vals, width, label=f"R@{k}")
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups])
    ax.set(
        ylim=(0, 122),
        ylabel="recall (%)",
        title=f"Recall@k ({m['n_queries']} queries; mAP {100 * m['map']['mean']:.1f})",
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=len(ks))
    ax.set_yticks(range(0, 101, 20))
    fig.tight_layout()
    path = out_dir / "recall_at_k.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
