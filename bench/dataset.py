"""``maxsim-bench dataset``: a synthetic moment-retrieval set with exact ground truth.

Each video is a sequence of solid-colour scenes (:func:`maxsim.synthetic.write_video`) of random lengths.
Every query names one colour ("a teal scene") and its relevant windows are the scenes of that colour. A
colour is used by one video only, so each query has exactly one right video (the QVHighlights form has one
``vid`` per query); with ``revisit`` a video's last scene shows its first colour again, so that query has
two relevant windows. The number of scenes in the whole set is therefore bounded by the palette size.
With ``spoken`` every scene also has a subtitle line and a paraphrase query (see :mod:`maxsim.bench.spoken`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from maxsim.bench.config import ConfigError
from maxsim.bench.groundtruth import write_ground_truth
from maxsim.bench.metrics import GroundTruth
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.spoken import write_spoken
from tqdm import tqdm

from maxsim.testing.color import PALETTE
from maxsim.testing.synthetic import cut_times, random_scenes, write_video

GROUND_TRUTH = "ground_truth.jsonl"
VIDEOS = "videos"


def _range(value: Any, key: str, cast=float) -> tuple:
    if isinstance(value, (int, float)):
        return cast(value), cast(value)
    if isinstance(value, list) and len(value) == 2 and value[0] <= value[1]:
        return cast(value[0]), cast(value[1])
    raise ConfigError(f"dataset.{key} must be a number or [low, high] with low <= high, got {value!r}")


def plan(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The videos of the set: name, scenes ``[(seconds, colour name), ...]`` (no files written)."""
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    n_videos = int(cfg["n_videos"])
    lo, hi = _range(cfg["scenes_per_video"], "scenes_per_video", int)
    s_lo, s_hi = _range(cfg["scene_seconds"], "scene_seconds")
    revisit = bool(cfg.get("revisit", False))
    fps = float(cfg["fps"])
    if n_videos < 1 or lo < 1:
        raise ConfigError("dataset.n_videos and dataset.scenes_per_video must be >= 1")
    if revisit and lo < 3:
        raise ConfigError(
            "dataset.revisit needs scenes_per_video >= 3 (the repeated colour must not touch itself)"
        )
    if s_lo * fps < 2:
        raise ConfigError(f"dataset.scene_seconds must give at least 2 frames per scene at {fps} fps")
    counts = rng.integers(lo, hi + 1, size=n_videos)
    distinct = counts - (1 if revisit else 0)
    if distinct.sum() > len(PALETTE):
        raise ConfigError(
            f"{int(distinct.sum())} distinct scene colours needed but the palette has {len(PALETTE)}; "
            "lower dataset.n_videos or dataset.scenes_per_video (each colour may appear in one video only)"
        )
    colours = list(rng.permutation(list(PALETTE)))
    videos = []
    for i, n in enumerate(counts):
        own = [str(colours.pop()) for _ in range(int(n) - (1 if revisit else 0))]
        if revisit:
            own.append(own[0])
        videos.append({"vid": f"v{i:03d}", "scenes": random_scenes(rng, None, (s_lo, s_hi), own, fps)})
    return videos


def scene_windows(scenes: list[tuple[float, str]], fps: float) -> list[tuple[float, float]]:
    """[start, end] of every scene as :func:`write_video` lays them out (frame-rounded)."""
    cuts = cut_times(scenes, fps)
    total = round(sum(s for s, _ in scenes) * fps) / fps
    starts = [0.0] + cuts
    ends = cuts + [total]
    return list(zip(starts, ends, strict=True))


def queries(videos: list[dict[str, Any]], cfg: dict[str, Any]) -> list[GroundTruth]:
    """One query per (video, colour): its windows are that colour's scenes."""
    rng = np.random.default_rng(int(cfg.get("seed", 0)) + 1)
    templates = list(cfg.get("templates") or ["a {color} scene"])
    fps = float(cfg["fps"])
    out = []
    for v in videos:
        windows = scene_windows(v["scenes"], fps)
        duration = windows[-1][1]
        for colour in dict.fromkeys(c for _, c in v["scenes"]):
            wins = [w for w, (_, c) in zip(windows, v["scenes"], strict=True) if c == colour]
            text = str(templates[int(rng.integers(len(templates)))]).format(color=colour)
            out.append(GroundTruth(str(len(out)), text, v["vid"], wins, duration))
    return out


def run(rec: Run) -> None:
    """Write the videos and the ground truth into the run folder (``source = "real"``: the pinned real
    footage and its hand-written queries, see :mod:`maxsim.bench.real_dataset`)."""
    cfg = rec.config
    source = str(cfg.get("source") or "synthetic")
    if source == "real":
        from maxsim.bench import real_dataset

        real_dataset.run(rec)
        return
    if source != "synthetic":
        raise ConfigError(f"dataset.source must be 'synthetic' or 'real', got {source!r}")
    videos = plan(cfg)
    gts = queries(videos, cfg)
    fps = float(cfg["fps"])
    size = tuple(int(x) for x in cfg["size"])
    vdir = rec.dir / VIDEOS
    vdir.mkdir(exist_ok=True)
    for i, v in enumerate(tqdm(videos, desc="writing videos", unit="video", disable=None)):
        scenes = [(s, PALETTE[c]) for s, c in v["scenes"]]
        write_video(vdir / f"{v['vid']}.mp4", scenes, fps=fps, size=size, seed=int(cfg.get("seed", 0)) + i)
        wins = scene_windows(v["scenes"], fps)
        rec.add(
            "videos",
            {
                "vid": v["vid"],
                "path": f"{VIDEOS}/{v['vid']}.mp4",
                "duration": wins[-1][1],
                "n_scenes": len(v["scenes"]),
                "scenes": [
                    {"colour": c, "start": w[0], "end": w[1]}
                    for (_, c), w in zip(v["scenes"], wins, strict=True)
                ],
            },
        )
    gt_path = write_ground_truth(rec.dir / GROUND_TRUTH, gts)
    n_spoken = 0
    if cfg.get("spoken"):
        wins = {v["vid"]: scene_windows(v["scenes"], fps) for v in videos}
        try:
            spoken_path, n_spoken = write_spoken(videos, wins, vdir, rec.dir, int(cfg.get("seed", 0)))
        except ValueError as e:
            raise ConfigError(f"dataset.spoken: {e}; lower n_videos or scenes_per_video") from None
        rec.put("spoken_ground_truth", str(spoken_path))
    (rec.dir / "dataset.json").write_text(
        json.dumps({"config": cfg, "videos": rec.results["videos"]}, indent=2)
    )
    rec.put("ground_truth", str(gt_path))
    rec.put(
        "summary",
        {
            "videos": len(videos),
            "queries": len(gts),
            "scenes": sum(len(v["scenes"]) for v in videos),
            "hours": round(sum(r["duration"] for r in rec.results["videos"]) / 3600, 4),
            "multi_window_queries": sum(1 for g in gts if len(g.windows) > 1),
            "spoken_queries": n_spoken,
        },
    )
    print(f"ground truth: {gt_path}\nnext: maxsim-bench eval --set ground_truth={gt_path}")


def tables(results: dict[str, Any]) -> list[Table]:
    if any("licence" in v for v in results.get("videos", [])):
        from maxsim.bench.real_dataset import video_rows

        real = Table("Videos", [Column("vid", "video"), Column("duration", "duration s", ".1f"),
                                Column("n", "queries"), Column("scenes", "licence")], video_rows(results))
        return [*tables({"summary": results.get("summary")})[:1], real]
    rows = [
        {
            "vid": v["vid"],
            "duration": v["duration"],
            "n": v["n_scenes"],
            "scenes": ", ".join(f"{s['colour']} {s['start']:g}-{s['end']:g}" for s in v["scenes"]),
        }
        for v in results.get("videos", [])
    ]
    s = results.get("summary")
    summary = [s] if s else []
    return [
        Table(
            "Dataset",
            [
                Column("videos", "videos"),
                Column("scenes", "scenes"),
                Column("queries", "queries"),
                Column("multi_window_queries", "multi-window queries"),
                Column("spoken_queries", "spoken queries"),
                Column("hours", "hours", ".4f"),
            ],
            summary,
        ),
        Table(
            "Videos",
            [
                Column("vid", "video"),
                Column("duration", "duration s", ".1f"),
                Column("n", "scenes"),
                Column("scenes", "scenes (colour start-end s)"),
            ],
            rows,
        ),
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    return []
