"""``maxsim-bench lifecycle``: what deleting a video and compacting cost as the index grows.

For each size of ``index_videos`` a synthetic index (no video decoding, no encoder) of ``videos x
segments_per_video`` segments of ``tokens_per_segment`` float16 tokens is written in ``parts`` store parts
(one commit each, as one ingest batch), then timed: opening a snapshot of it (median of 3), deleting one
video ``deletes`` times (the atomic commit, and reopening the engine's view of the new version
incrementally from the previous one), and a full compaction that drops the deleted rows and merges the
parts. Each size is saved as soon as it is measured; the index is built in a temporary folder
(``work_dir``, default the system's) that is removed afterwards, also on Ctrl-C.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from maxsim.bench.config import ConfigError
from maxsim.bench.report import Column, Run, Table
from tqdm import tqdm

SUMMARY = 0
_POOL = 4096  # distinct token rows the synthetic segments are cut from


def build_index(root: Path, cfg: dict[str, Any], videos: int) -> tuple[Any, int, float]:
    """Write the synthetic index into ``root``; returns the store, its segment count and the seconds taken."""
    from maxsim.index import SegmentRecord, Store

    dim, tokens, per_video = int(cfg["dim"]), int(cfg["tokens_per_segment"]), int(cfg["segments_per_video"])
    parts = max(1, min(int(cfg["parts"]), videos))
    if tokens >= _POOL:
        raise ConfigError(f"tokens_per_segment must be below {_POOL}, got {tokens}")
    store = Store.create(root, {"name": "bench-lifecycle"}, dim)
    pool = torch.from_numpy(np.random.default_rng(0).standard_normal((_POOL, dim)).astype(np.float16))
    thumb = b"\xff" * int(cfg["thumbnail_bytes"])
    per_part = -(-videos // parts)
    t0 = time.perf_counter()
    sid = 0
    for p in tqdm(range(parts), desc=f"index of {videos} videos", unit="part", leave=False, disable=None):
        with store.writing():
            base = store.manifest()
            w = store.new_part(base)
            for v in range(p * per_part, min(videos, (p + 1) * per_part)):
                for s in range(per_video):
                    j = (sid * tokens) % (_POOL - tokens)
                    w.add(sid, SegmentRecord(f"/data/v{v}.mp4", "h", "s", s, s + 1, [s + 0.5], thumb,
                                             pool[j : j + tokens]))  # fmt: skip
                    sid += 1
            store.commit(base, [w.close()], next_segment_id=sid)
    return store, sid, time.perf_counter() - t0


def measure(cfg: dict[str, Any], videos: int, work_dir: str | None) -> dict[str, Any]:
    """Build an index of ``videos`` videos and time snapshot opening, deletes and a full compaction."""
    from maxsim.index import Snapshot

    deletes = int(cfg["deletes"])
    if not 1 <= deletes <= videos:
        raise ConfigError(f"deletes must be between 1 and the smallest index size ({videos}), got {deletes}")
    with tempfile.TemporaryDirectory(prefix="lifecycle-bench-", dir=work_dir) as tmp:
        root = Path(tmp) / "index"
        store, n_segments, build_s = build_index(root, cfg, videos)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        open_ms = []
        for _ in range(3):  # the first open in a process also pays one-time costs of the readers
            t0 = time.perf_counter()
            snap = store.snapshot()
            open_ms.append((time.perf_counter() - t0) * 1000)
        commit_ms, reopen_ms = [], []
        for i in range(deletes):
            t0 = time.perf_counter()
            with store.writing():
                store.commit(store.manifest(), delete_videos=[f"/data/v{i}.mp4"], op="delete")
            t1 = time.perf_counter()
            snap = Snapshot(root, store.manifest(), snap)
            commit_ms.append((t1 - t0) * 1000)
            reopen_ms.append((time.perf_counter() - t1) * 1000)
        if len(snap) != n_segments - deletes * int(cfg["segments_per_video"]):
            raise RuntimeError(f"after {deletes} deletes the index has {len(snap)} live segments")
        manifest_kib = (root / "manifest.json").stat().st_size / 1024
        parts_before = len(store.manifest().parts)
        t0 = time.perf_counter()
        with store.writing():
            rep = store.compact(full=True, keep_versions=1)
        compact_s = time.perf_counter() - t0
    return {
        "videos": videos,
        "segments": n_segments,
        "index_mib": size / 2**20,
        "parts": parts_before,
        "build_s": build_s,
        "open_snapshot_ms": statistics.median(open_ms),
        "open_snapshot_ms_all": open_ms,
        "delete_commit_ms": statistics.median(commit_ms),
        "delete_reopen_ms": statistics.median(reopen_ms),
        "delete_commit_ms_all": commit_ms,
        "delete_reopen_ms_all": reopen_ms,
        "manifest_kib": manifest_kib,
        "compaction_s": compact_s,
        "parts_after": rep.parts_after,
        "segments_dropped": rep.segments_dropped,
    }


def run(rec: Run) -> None:
    cfg = rec.config
    sizes = cfg["index_videos"]
    if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ConfigError(f"index_videos must be a list of positive integers, got {sizes!r}")
    work_dir = cfg.get("work_dir") or None
    if work_dir and not Path(work_dir).is_dir():
        raise ConfigError(f"work_dir {work_dir} is not a folder")
    for videos in tqdm(sorted(sizes), desc="index sizes", unit="index", disable=None):
        rec.add("sizes", measure(cfg, videos, work_dir))


def tables(results: dict[str, Any]) -> list[Table]:
    rows = results.get("sizes", [])
    if not rows:
        return []
    cols = [
        Column("videos", "videos", ","),
        Column("segments", "segments", ","),
        Column("index_mib", "index MiB", ",.1f"),
        Column("parts", "parts"),
        Column("build_s", "build s", ".2f"),
        Column("open_snapshot_ms", "open snapshot ms", ".1f"),
        Column("delete_commit_ms", "delete commit ms", ".1f"),
        Column("delete_reopen_ms", "reopen view ms", ".1f"),
        Column("manifest_kib", "manifest KiB", ".1f"),
        Column("compaction_s", "full compaction s", ".2f"),
        Column("parts_after", "parts after"),
        Column("segments_dropped", "segments dropped", ","),
    ]
    return [
        Table(
            "Delete and compaction cost vs index size (synthetic float16 index)",
            cols,
            rows,
            note="delete commit: one video tombstoned and the new version published atomically (median); "
            "reopen view: the engine's snapshot of the new version built from the previous one (median); "
            "full compaction: deleted rows dropped and every part merged, old versions removed.",
        )
    ]


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    rows = sorted(results.get("sizes", []), key=lambda r: r["segments"])
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["segments"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(x, [r["delete_commit_ms"] for r in rows], "o-", label="delete commit (ms)")
    ax.plot(x, [r["delete_reopen_ms"] for r in rows], "s-", label="reopen view (ms)")
    ax.plot(x, [r["open_snapshot_ms"] for r in rows], "^-", label="open snapshot (ms)")
    ax.plot(x, [1000 * r["compaction_s"] for r in rows], "d--", label="full compaction (ms)")
    if len(x) > 1:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="segments in the index", ylabel="ms", title="Lifecycle operations vs index size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "lifecycle_latency.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]
