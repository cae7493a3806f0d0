"""``maxsim-bench ingest``: the real-time factor of each ingest stage, measured separately.

Each video goes through the engine's stages one by one, with the engine's own components: a single decode
pass (:func:`maxsim.video.iter_frames`) feeding the segmenter and the frame sampler, clip assembly with
thumbnails, the encoder, and an Arrow store write with its atomic commit. Time spent in each is summed
separately, so "decode" is the decoder alone and "segment"/"sample" are what cut detection and frame
sampling add on top of it. RTF = seconds of work per second of video (below 1 is faster than real time).
With ``engine_check`` the same videos are also ingested by :meth:`maxsim.engine.Engine.ingest` in one call,
to compare the sum of the stages with the engine end to end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from maxsim.bench.config import ConfigError, build
from maxsim.bench.report import Column, Run, Table
from tqdm import tqdm

SUMMARY = 0
STAGES = ("decode", "segment", "sample", "encode", "write")
STAGE_LABELS = {
    "decode": "decode",
    "segment": "cut detection",
    "sample": "frame sampling + clips",
    "encode": "encoding",
    "write": "store write",
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def synthetic_videos(folder: Path, spec: dict[str, Any], seed: int = 0) -> list[Path]:
    """Colour-scene videos (see :mod:`maxsim.synthetic`) of ``spec["seconds"]`` each, scenes of random
    length within ``spec["scene_seconds"]``."""
    from maxsim.synthetic import COLORS, write_video

    rng = np.random.default_rng(seed)
    names = list(COLORS)
    lo, hi = spec.get("scene_seconds", [2.0, 6.0])
    out = []
    for i in range(int(spec["count"])):
        scenes, total, prev = [], 0.0, None
        while total < float(spec["seconds"]) - 1e-9:
            s = min(float(rng.uniform(lo, hi)), float(spec["seconds"]) - total)
            colour = rng.choice([n for n in names if n != prev])
            scenes.append((s, str(colour)))
            total, prev = total + s, colour
        path = folder / f"synthetic{i:02d}.mp4"
        write_video(path, scenes, fps=float(spec["fps"]), size=tuple(spec["size"]), seed=seed + i)
        out.append(path)
    return out


def video_paths(cfg: dict[str, Any], folder: Path) -> list[Path]:
    from maxsim.engine import expand_paths

    if cfg.get("videos"):
        paths = [Path(p) for p in expand_paths(cfg["videos"])]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"video(s) not found: {', '.join(missing[:5])}")
        if not paths:
            raise ConfigError(f"no video files in {cfg['videos']}")
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    return synthetic_videos(folder, cfg["synthetic"], int(cfg.get("seed", 0)))


def measure_video(
    path: Path,
    segmenter: Any,
    sampler: Any,
    encoder: Any,
    store: Any,
    batch_size: int,
    next_id: int,
    settings: str,
) -> dict[str, Any]:
    """Seconds of each stage for one video (and what it produced); the segments land in ``store``."""
    from maxsim.store import SegmentRecord
    from maxsim.video import content_hash, iter_frames

    t: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    t0 = time.perf_counter()
    digest = content_hash(path)
    t["hash"] = time.perf_counter() - t0

    run = segmenter.start()
    feed_seg = segmenter.needs_frames
    sam = sampler.fresh()
    frames = iter_frames(path)
    n_frames = 0
    it = iter(frames)
    while True:
        a = time.perf_counter()
        try:
            ts, frame = next(it)
        except StopIteration:
            t["decode"] += time.perf_counter() - a
            break
        b = time.perf_counter()
        t["decode"] += b - a
        if feed_seg:
            run.feed(ts, frame)
        c = time.perf_counter()
        t["segment"] += c - b
        sam.feed(ts, frame)
        t["sample"] += time.perf_counter() - c
        n_frames += 1
    duration = frames.duration
    a = time.perf_counter()
    segments = run.finish(duration)
    b = time.perf_counter()
    clips = sam.clips(str(path), segments)
    t["segment"] += b - a
    t["sample"] += time.perf_counter() - b

    vectors: list[torch.Tensor] = []
    _sync()
    a = time.perf_counter()
    for i in range(0, len(clips), batch_size):
        vectors += encoder.encode_clips([c for c, _ in clips[i : i + batch_size]])
    _sync()
    t["encode"] = time.perf_counter() - a

    a = time.perf_counter()
    with store.writing():
        base = store.manifest()
        writer = store.new_part()
        for j, ((clip, thumb), v) in enumerate(zip(clips, vectors, strict=True)):
            writer.add(
                next_id + j,
                SegmentRecord(
                    str(path),
                    digest,
                    settings,
                    clip.start,
                    clip.end,
                    list(map(float, clip.timestamps)),
                    thumb,
                    v.detach().cpu(),
                ),
            )
        part = writer.close()
        store.commit(base, [part], next_segment_id=next_id + len(clips), op="ingest", info={"bench": True})
    t["write"] = time.perf_counter() - a
    return {
        "video": path.name,
        "duration_s": duration,
        "frames": n_frames,
        "segments": len(segments),
        "sampled_frames": int(sum(len(c.timestamps) for c, _ in clips)),
        "tokens": int(sum(v.shape[0] for v in vectors)),
        "seconds": t,
    }


def run(rec: Run) -> None:
    from maxsim.encoders import load_encoder
    from maxsim.engine import Engine
    from maxsim.frames import FrameSampler
    from maxsim.segment import load_segmenter
    from maxsim.store import Store

    cfg = rec.config
    paths = video_paths(cfg, rec.dir / "videos")
    encoder = build(
        f"encoder {cfg['encoder']!r}", load_encoder, cfg["encoder"], **dict(cfg.get("encoder_kwargs") or {})
    )
    segmenter = build(f"segmenter {cfg['segmenter']!r}", load_segmenter, cfg["segmenter"])
    sampler = build("sampler", FrameSampler, **dict(cfg.get("sampler") or {}))
    rec.put(
        "setup",
        {
            "videos": [str(p) for p in paths],
            "encoder": encoder.name,
            "dim": encoder.dim,
            "segmenter": segmenter.name,
            "sampler": sampler.name,
            "dtype": cfg["dtype"],
        },
    )
    store = Store.create(
        rec.dir / "index", {"name": encoder.name, "dim": int(encoder.dim)}, encoder.dim, cfg["dtype"]
    )
    settings = f"bench:{segmenter.name}:{sampler.name}:{encoder.name}"
    next_id = 0
    for path in tqdm(paths, desc="ingest stages", unit="video", disable=None):
        row = measure_video(
            path, segmenter, sampler, encoder, store, int(cfg["batch_size"]), next_id, settings
        )
        next_id += row["segments"]
        rec.add("videos", _with_rtf(row))
    rec.put("total", total(rec.results["videos"]))
    if cfg.get("engine_check", False):
        engine = Engine(
            rec.dir / "engine-index",
            encoder=encoder,
            segmenter=segmenter,
            sampler=sampler,
            batch_size=int(cfg["batch_size"]),
            dtype=cfg["dtype"],
        )
        a = time.perf_counter()
        report = engine.ingest([str(p) for p in paths], progress=False)
        dt = time.perf_counter() - a
        dur = rec.results["total"]["duration_s"]
        rec.put(
            "engine",
            {
                "seconds": dt,
                "rtf": dt / dur if dur else None,
                "segments": report.segments,
                "failed": len(report.failed),
            },
        )


def _with_rtf(row: dict[str, Any]) -> dict[str, Any]:
    d = row["duration_s"] or float("nan")
    t = row["seconds"]
    row["rtf"] = {s: t[s] / d for s in t}
    row["rtf"]["decode+segment"] = (t["decode"] + t["segment"]) / d
    row["rtf"]["total"] = sum(t.values()) / d
    return row


def total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The stages summed over all videos."""
    keys = rows[0]["seconds"].keys() if rows else STAGES
    out = {
        "video": "all",
        "duration_s": sum(r["duration_s"] for r in rows),
        "frames": sum(r["frames"] for r in rows),
        "segments": sum(r["segments"] for r in rows),
        "sampled_frames": sum(r["sampled_frames"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "seconds": {k: sum(r["seconds"][k] for r in rows) for k in keys},
    }
    return _with_rtf(out)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not isinstance(v, dict)}
    out.update({f"rtf_{k}": v for k, v in row["rtf"].items()})
    out["realtime_x"] = 1 / row["rtf"]["total"] if row["rtf"]["total"] else None
    return out


def tables(results: dict[str, Any]) -> list[Table]:
    videos = results.get("videos", [])
    rows = [_flat(r) for r in videos]
    if videos:  # computed here too, so an interrupted run still gets its total
        rows.append(_flat(results.get("total") or total(videos)))
    cols = [
        Column("video", "video"),
        Column("duration_s", "video s", ".1f"),
        Column("segments", "segments"),
        Column("sampled_frames", "frames kept"),
        Column("rtf_decode", "decode", ".4f"),
        Column("rtf_segment", "cut detect", ".4f"),
        Column("rtf_decode+segment", "decode+segment", ".4f"),
        Column("rtf_sample", "sampling", ".4f"),
        Column("rtf_encode", "encoding", ".4f"),
        Column("rtf_write", "writing", ".4f"),
        Column("rtf_total", "total", ".4f"),
        Column("realtime_x", "x real time", ",.1f"),
    ]
    out = [
        Table(
            "Ingest real-time factor per stage (seconds of work per second of video)",
            cols,
            rows,
            note="decode: the decoder alone; cut detect and sampling: what they add to the one decode pass; "
            "total includes content hashing.",
        )
    ]
    eng = results.get("engine")
    if eng:
        tot = results.get("total", {}).get("rtf", {}).get("total")
        out.append(
            Table(
                "Engine.ingest end to end on the same videos",
                [
                    Column("seconds", "seconds", ".2f"),
                    Column("rtf", "RTF", ".4f"),
                    Column("stages", "sum of stages RTF", ".4f"),
                    Column("segments", "segments"),
                ],
                [{**eng, "stages": tot}],
            )
        )
    return out


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    if not results.get("videos"):
        return []
    tot = results.get("total") or total(results["videos"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if s in tot["rtf"]]
    vals = [tot["rtf"][s] for s in stages]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    bars = ax.bar([STAGE_LABELS[s] for s in stages], vals, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=8, padding=2)
    ax.set(
        ylabel="RTF (s of work per s of video)",
        title=f"Ingest cost per stage ({tot['duration_s']:.0f} s of video, RTF {tot['rtf']['total']:.3g})",
    )
    ax.set_ylim(0, max(vals) * 1.2 if max(vals) > 0 else 1)
    ax.grid(True, axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=15)
    fig.tight_layout()
    path = out_dir / "ingest_rtf.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
