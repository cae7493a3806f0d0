"""``maxsim-bench segment``: how well each segmenter spec finds shot cuts, and how fast.

Cut precision, recall and F1 at several tolerances (a detected cut matches at most one reference cut
within the tolerance, closest pairs first) against reference cut lists made by another method
(``bench/data/real_cuts.json``, see bench/data/README.md), plus seconds of wall time per second of
video (one shared decode by the ingest's own decode pass, with the detection-size copies, timed once,
plus each spec's own detection time). Scene specs are measured
with ``max_seconds=None``: splitting long scenes adds bounds that are not cuts. ``synthetic = true``
measures on a small generated video whose cuts are known exactly (CI).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maxsim.bench.config import ConfigError
from maxsim.bench.report import Column, Run, Table
from tqdm import tqdm

from maxsim.media.avframes import iter_decoded
from maxsim.media.segment import load_segmenter

DATA_CUTS = Path(__file__).resolve().parent / "data" / "real_cuts.json"


def match_cuts(pred: Sequence[float], ref: Sequence[float], tol: float) -> int:
    """How many predicted cuts match a distinct reference cut within ``tol`` seconds (closest first)."""
    pairs = sorted((abs(p - r), i, j) for i, p in enumerate(pred) for j, r in enumerate(ref)
                   if abs(p - r) <= tol + 1e-9)
    used_p, used_r, n = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
            n += 1
    return n


def prf(tp: int, n_pred: int, n_ref: int) -> dict[str, float]:
    """Precision, recall, F1 (1.0 for an empty denominator: no cut claimed / none to find)."""
    p = tp / n_pred if n_pred else 1.0
    r = tp / n_ref if n_ref else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def scores(pred: dict[str, list[float]], ref: dict[str, list[float]],
           tols: Sequence[float]) -> dict[str, Any]:
    """Micro-averaged P/R/F1 over the videos of ``ref`` at each tolerance."""
    out: dict[str, Any] = {}
    for tol in tols:
        tp = sum(match_cuts(pred.get(v, []), cuts, tol) for v, cuts in ref.items())
        n_pred = sum(len(pred.get(v, [])) for v in ref)
        n_ref = sum(len(c) for c in ref.values())
        out[f"{tol:g}"] = {"tp": tp, "pred": n_pred, "ref": n_ref, **prf(tp, n_pred, n_ref)}
    return out


def measure_spec(spec: str) -> Any:
    seg = load_segmenter(spec)
    if hasattr(seg, "max_seconds"):  # scene specs: detection only, no splitting of long scenes
        head = spec if ":" in spec else f"{spec}:"
        sep = "" if head.endswith(":") else ","
        seg = load_segmenter(f"{head}{sep}max_seconds=None")
    return seg


def segment_video(path: Path, specs: Sequence[str]) -> tuple[dict[str, list[float]], dict[str, float], float]:
    """One decode of ``path`` feeding every spec: ({spec: cuts}, {spec: detection seconds}, decode s)."""
    segs = {s: measure_spec(s) for s in specs}
    runs = {s: g.start() for s, g in segs.items()}
    spent = dict.fromkeys(specs, 0.0)
    t0 = time.perf_counter()
    # the ingest's own decode pass: frames in the decoder's format, each run given them as iter_clips does
    # (a detection-size copy picked from the decoded planes where the run takes them, else full BGR)
    with iter_decoded(path, prefetch=0) as frames:
        for t, frame in frames:
            for g in segs.values():  # the shared detection copies count as decoding, as in the ingest
                size = g.detection_size(frame.width, frame.height) if hasattr(g, "detection_size") else None
                if size is not None:
                    frame.bgr_scaled(*size)
            for s, run in runs.items():
                if segs[s].needs_frames:
                    a = time.perf_counter()
                    feed_decoded = getattr(run, "feed_decoded", None)
                    if feed_decoded is not None:
                        feed_decoded(t, frame)
                    else:
                        run.feed(t, frame.bgr())
                    spent[s] += time.perf_counter() - a
    total = time.perf_counter() - t0
    cuts = {}
    for s, run in runs.items():
        a = time.perf_counter()
        segments = run.finish(frames.duration)
        spent[s] += time.perf_counter() - a
        cuts[s] = [round(x.start, 4) for x in segments[1:]]
    return cuts, spent, max(total - sum(spent.values()), 0.0), frames.duration


def _synthetic(rec: Run, cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from maxsim.testing.synthetic import cut_times, random_scenes, write_video

    syn = cfg.get("synthetic") or {}
    fps = float(syn.get("fps", 10.0))
    # distinct colours, scenes of 1.5-3 s: every cut is one a detector should find
    scenes = random_scenes(int(cfg.get("seed", 0)), None, (1.5, 3.0), ["red", "blue", "white", "green"], fps)
    path = write_video(rec.dir / "synthetic.mp4", scenes, fps=fps, size=tuple(syn.get("size", [96, 64])))
    return {"synthetic": {"path": path, "cuts": cut_times(scenes, fps)}}


def _real(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ref = json.loads(Path(str(cfg.get("cuts") or DATA_CUTS)).read_text())
    folder = Path(str(cfg.get("videos") or "")).expanduser() if cfg.get("videos") else None
    if folder is None:
        from maxsim.bench.real_footage import DEFAULT_CACHE, ensure_videos

        paths = ensure_videos(Path(str(cfg.get("cache") or DEFAULT_CACHE)))
    else:
        paths = {p.stem: p for p in folder.iterdir() if p.is_file() or p.is_symlink()}
    out = {}
    for vid, entry in ref.items():
        if vid.startswith("_"):
            continue
        if vid not in paths:
            raise ConfigError(f"reference cuts name video {vid!r}, not found (videos: {sorted(paths)})")
        out[vid] = {"path": paths[vid], "cuts": [float(c) for c in entry["cuts"]]}
    return out


def run(rec: Run) -> None:
    cfg = rec.config
    specs = [str(s) for s in cfg["segmenters"]]
    tols = [float(t) for t in cfg.get("tolerances", [0.25, 0.5, 1.0])]
    for s in specs:  # a bad spec fails before any decoding
        try:
            measure_spec(s)
        except (ValueError, TypeError, ImportError, AttributeError) as e:
            raise ConfigError(f"segmenters: {e}") from e
    videos = _synthetic(rec, cfg) if cfg.get("synthetic_only") else _real(cfg)
    pred: dict[str, dict[str, list[float]]] = {s: {} for s in specs}
    spent = dict.fromkeys(specs, 0.0)
    decode, seconds = 0.0, 0.0
    for vid, v in tqdm(videos.items(), desc="segmenting", unit="video", disable=None):
        cuts, t_spec, t_dec, dur = segment_video(Path(v["path"]), specs)
        decode += t_dec
        seconds += dur
        for s in specs:
            pred[s][vid] = cuts[s]
            spent[s] += t_spec[s]
        rec.add("videos", {"vid": vid, "duration": dur, "reference": v["cuts"], "detected": cuts,
                           "decode_s": t_dec})
    ref = {vid: v["cuts"] for vid, v in videos.items()}
    for s in specs:
        sc = scores(pred[s], ref, tols)
        rec.add("specs", {"spec": s, "name": measure_spec(s).name, "scores": sc,
                          "detect_s_per_s": spent[s] / seconds, "s_per_s": (spent[s] + decode) / seconds,
                          **{f"f1@{k}": v["f1"] for k, v in sc.items()},
                          **{f"p@{k}": v["precision"] for k, v in sc.items()},
                          **{f"r@{k}": v["recall"] for k, v in sc.items()}})
    rec.put("summary", {"videos": len(videos), "seconds": seconds,
                        "reference_cuts": sum(map(len, ref.values())), "decode_s_per_s": decode / seconds})


def tables(results: dict[str, Any]) -> list[Table]:
    rows = results.get("specs", [])
    tols = list(rows[0]["scores"]) if rows else []
    cols = [Column("spec", "segmenter spec")]
    for t in tols:
        cols += [Column(f"p@{t}", f"P@{t}s", ".2f"), Column(f"r@{t}", f"R@{t}s", ".2f"),
                 Column(f"f1@{t}", f"F1@{t}s", ".2f")]
    cols += [Column("detect_s_per_s", "detect s/s", ".4f"), Column("s_per_s", "decode+detect s/s", ".4f")]
    vids = [{"vid": v["vid"], "duration": v["duration"], "ref": len(v["reference"]),
             "cuts": ", ".join(f"{c:g}" for c in v["reference"]) or "-"} for v in results.get("videos", [])]
    s = results.get("summary")
    return [
        Table("Cut detection (micro-averaged over the videos)", cols, rows),
        Table("Reference cuts", [Column("vid", "video"), Column("duration", "duration s", ".1f"),
                                 Column("ref", "cuts"), Column("cuts", "reference cut times s")], vids),
        Table("Run", [Column("videos", "videos"), Column("seconds", "video s", ".1f"),
                      Column("reference_cuts", "reference cuts"),
                      Column("decode_s_per_s", "decode s/s", ".4f")], [s] if s else []),
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    rows = results.get("specs", [])
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tols = list(rows[0]["scores"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2), dpi=120,
                                  gridspec_kw={"width_ratios": [3, 1]})
    h = 0.8 / len(tols)
    for i, t in enumerate(tols):
        ys = [j + (i - (len(tols) - 1) / 2) * h for j in range(len(rows))]
        ax.barh(ys, [r["scores"][t]["f1"] for r in rows], h, label=f"F1 @ {t} s")
    ax.set_yticks(range(len(rows)), [r["spec"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="cut F1 (micro)", title="Cut detection vs reference cuts")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    ax2.barh(range(len(rows)), [r["s_per_s"] for r in rows], color="grey")
    ax2.set_yticks(range(len(rows)), [""] * len(rows))
    ax2.invert_yaxis()
    ax2.set(xlabel="s per s of video (decode+detect)")
    fig.tight_layout()
    path = out_dir / "segment_f1.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
