"""``maxsim-bench decode``: frames per second of the decode -> segment -> sample stage.

On one video (a synthetic colour-scene MP4 of ``synthetic`` settings written into the run folder, or the file
``video``) this times, ``repeats`` times each: decoding alone (:func:`maxsim.video.iter_frames`), and the
engine's one-pass :func:`maxsim.frames.iter_clips` with each segmenter of ``segmenters`` and the frame
sampler, each with every background-decode queue depth of ``prefetch`` (0: decode in the calling thread).
Settings are interleaved within a repeat so that load changes on the machine hit them alike; the medians are
reported as decoded frames per second and as a multiple of real time. Every stage is saved as soon as it
is measured.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from maxsim.bench.config import ConfigError, build
from maxsim.bench.report import Column, Run, Table
from tqdm import tqdm

SUMMARY = 0


def bench_video(cfg: dict[str, Any], folder: Path) -> Path:
    """The configured ``video``, or a synthetic one written into ``folder``."""
    from maxsim.testing.synthetic import random_scenes, write_video

    if cfg.get("video"):
        path = Path(cfg["video"])
        if not path.is_file():
            raise ConfigError(f"video {path} does not exist")
        return path
    spec = cfg["synthetic"]
    folder.mkdir(parents=True, exist_ok=True)
    scenes = random_scenes(int(cfg.get("seed", 0)), float(spec["seconds"]), tuple(spec["scene_seconds"]))
    return write_video(folder / "decode-bench.mp4", scenes, fps=float(spec["fps"]), size=tuple(spec["size"]))


def run(rec: Run) -> None:
    from maxsim.media import FrameSampler, iter_clips
    from maxsim.media.segment import load_segmenter
    from maxsim.media.video import iter_frames

    cfg = rec.config
    prefetch = [int(p) for p in cfg["prefetch"]]
    if not prefetch or any(p < 0 for p in prefetch):
        raise ConfigError(f"prefetch must be a list of queue depths >= 0, got {cfg['prefetch']!r}")
    segmenters = {spec: build(f"segmenter {spec!r}", load_segmenter, spec) for spec in cfg["segmenters"]}
    sampler = build("sampler", FrameSampler, **dict(cfg.get("sampler") or {}))
    path = bench_video(cfg, rec.dir / "video")
    t0 = time.perf_counter()
    times = [t for t, _ in iter_frames(path)]
    first_s = time.perf_counter() - t0
    if not times:
        raise ConfigError(f"video {path} has no decodable frames")
    n_frames = len(times)
    duration = times[-1] - times[0] + (times[-1] - times[0]) / max(n_frames - 1, 1)
    rec.put("video", {"path": str(path), "frames": n_frames, "duration_s": duration, "first_pass_s": first_s})

    def decode(pf: int) -> int:
        return sum(1 for _ in iter_frames(path, prefetch=pf))

    def clips(spec: str, pf: int) -> int:
        # iter_clips starts a fresh run of the segmenter and a fresh sampler for every call
        return len(list(iter_clips(path, segmenters[spec], sampler, prefetch=pf)))

    stages: dict[str, Any] = {"decode": decode}
    for spec in segmenters:
        stages[f"{spec}+sample"] = lambda pf, spec=spec: clips(spec, pf)
    for stage, fn in tqdm(stages.items(), desc="decode stages", unit="stage", disable=None):
        seconds: dict[int, list[float]] = {pf: [] for pf in prefetch}
        produced: dict[int, int] = {}
        for _ in range(int(cfg["repeats"])):
            for pf in prefetch:
                t0 = time.perf_counter()
                produced[pf] = fn(pf)
                seconds[pf].append(time.perf_counter() - t0)
        for pf in prefetch:
            t = statistics.median(seconds[pf])
            rec.add(
                "stages",
                {
                    "stage": stage,
                    "prefetch": pf,
                    "seconds": t,
                    "seconds_all": seconds[pf],
                    "fps": n_frames / t,
                    "realtime_x": duration / t,
                    "output": produced[pf],  # frames decoded, or clips made
                },
            )


def tables(results: dict[str, Any]) -> list[Table]:
    rows = results.get("stages", [])
    if not rows:
        return []
    v = results.get("video", {})
    cols = [
        Column("stage", "stage"),
        Column("prefetch", "prefetch"),
        Column("seconds", "seconds", ".3f"),
        Column("fps", "frames/s", ",.0f"),
        Column("realtime_x", "x real time", ",.1f"),
        Column("output", "frames or clips"),
    ]
    return [
        Table(
            f"Decode -> segment -> sample throughput ({Path(v.get('path', '?')).name}: "
            f"{v.get('frames', '?')} frames, {v.get('duration_s', 0):.1f} s)",
            cols,
            rows,
            note="frames/s: decoded frames of the video per second of the stage (median); prefetch: frames "
            "queued by the background decode thread (0: decoding in the calling thread).",
        )
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    rows = results.get("stages", [])
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in rows))
    depths = list(dict.fromkeys(r["prefetch"] for r in rows))
    width = 0.8 / len(depths)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for i, pf in enumerate(depths):
        fps = {r["stage"]: r["fps"] for r in rows if r["prefetch"] == pf}
        vals = [fps.get(s, 0.0) for s in stages]
        xs = [j + (i - (len(depths) - 1) / 2) * width for j in range(len(stages))]
        bars = ax.bar(xs, vals, width, label=f"prefetch {pf}")
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize=7, padding=2)
    ax.set_xticks(range(len(stages)), stages)
    v = results.get("video", {})
    ax.set(ylabel="decoded frames/s", title=f"Decode stages on {Path(v.get('path', '?')).name}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "decode_fps.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
