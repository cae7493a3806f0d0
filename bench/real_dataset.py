"""``maxsim-bench dataset --source real``: the pinned real footage (:mod:`maxsim.bench.real_footage`) with
the hand-written QVHighlights-style queries of ``bench/data/real_queries.jsonl``, laid out as the
synthetic ``dataset`` is (``videos/<vid><ext>``, ``ground_truth.jsonl``, ``dataset.json``) so that
``maxsim-bench eval`` runs on it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maxsim.bench.config import ConfigError
from maxsim.bench.groundtruth import load_ground_truth, write_ground_truth
from maxsim.bench.metrics import GroundTruth
from maxsim.bench.real_footage import DEFAULT_CACHE, FOOTAGE, Footage, ensure_videos
from maxsim.bench.report import Run

DATA_DIR = Path(__file__).resolve().parent / "data"
QUERIES = DATA_DIR / "real_queries.jsonl"
CUTS = DATA_DIR / "real_cuts.json"


def check_queries(gts: Sequence[GroundTruth], footage: Sequence[Footage] | None = None) -> list[GroundTruth]:
    """The queries with each video's pinned duration; an error names a query whose video is not pinned,
    whose window ends after the video or whose qid repeats."""
    by_vid = {f.vid: f for f in (FOOTAGE if footage is None else footage)}
    seen: set[str] = set()
    out = []
    for g in gts:
        f = by_vid.get(g.vid)
        if f is None:
            raise ConfigError(f"query {g.qid} ({g.query!r}) names video {g.vid!r}, not one of "
                              f"{sorted(by_vid)}")
        if g.qid in seen:
            raise ConfigError(f"query id {g.qid} appears twice")
        seen.add(g.qid)
        late = [w for w in g.windows if w[1] > f.duration + 1e-6]
        if late:
            raise ConfigError(f"query {g.qid}: window {list(late[0])} ends after {g.vid} ({f.duration} s)")
        out.append(GroundTruth(g.qid, g.query, g.vid, list(g.windows), f.duration, dict(g.extra or {})))
    return out


def link_videos(videos: Mapping[str, Path], dest: Path) -> dict[str, Path]:
    """``dest/<vid><ext>`` for every cached video: a symbolic link, or a copy where links fail."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for vid, src in videos.items():
        p = dest / f"{vid}{src.suffix}"
        p.unlink(missing_ok=True)
        try:
            os.symlink(src.resolve(), p)
        except OSError:
            shutil.copyfile(src, p)
        out[vid] = p
    return out


def run(rec: Run) -> None:
    cfg = rec.config
    cache = Path(str(cfg.get("cache") or DEFAULT_CACHE)).expanduser()
    qfile = Path(str(cfg.get("queries") or QUERIES))
    gts = check_queries(load_ground_truth(qfile, "qvhighlights"))
    print(f"real footage: cache {cache}", flush=True)
    videos = ensure_videos(cache)
    linked = link_videos(videos, rec.dir / "videos")
    gt_path = write_ground_truth(rec.dir / "ground_truth.jsonl", gts)
    by_vid = {f.vid: f for f in FOOTAGE}
    for vid, p in linked.items():
        f = by_vid[vid]
        rec.add("videos", {"vid": vid, "path": f"videos/{p.name}", "duration": f.duration, "sha256": f.sha256,
                           "archive": f.archive, "licence": f.licence, "note": f.note,
                           "queries": sum(1 for g in gts if g.vid == vid)})
    (rec.dir / "dataset.json").write_text(json.dumps(
        {"config": cfg, "source": "real", "queries_file": str(qfile), "videos": rec.results["videos"]},
        indent=2))
    rec.put("ground_truth", str(gt_path))
    rec.put("summary", {"videos": len(linked), "queries": len(gts), "scenes": "-",
                        "hours": round(sum(f.duration for f in FOOTAGE) / 3600, 4),
                        "multi_window_queries": sum(1 for g in gts if len(g.windows) > 1)})
    print(f"ground truth: {gt_path}\nnext: maxsim-bench eval --set ground_truth={gt_path}")


def video_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"vid": v["vid"], "duration": v["duration"], "n": v["queries"], "scenes": v["licence"]}
            for v in results.get("videos", [])]
