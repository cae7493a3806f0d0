"""Cost of index lifecycle operations on a synthetic index (no video decoding, no encoder).

    python bench/bench_lifecycle.py --videos 2000 --segments 50 --tokens 8 --dim 128 --parts 20

Builds an index of ``videos x segments`` segments in ``parts`` parts, then times: opening a snapshot,
deleting one video (the commit, and the engine-side reopen of its view), and a full compaction.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maxsim.store import SegmentRecord, Snapshot, Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--segments", type=int, default=50, help="segments per video")
    ap.add_argument("--tokens", type=int, default=8, help="tokens per segment")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--deletes", type=int, default=5)
    ap.add_argument("--dir", help="where to build the index (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp) / "idx"
        store = Store.create(root, {"name": "bench"}, args.dim)
        rng = np.random.default_rng(0)
        pool = torch.from_numpy(rng.standard_normal((4096, args.dim)).astype(np.float16))
        per_part = -(-args.videos // args.parts)
        t0 = time.perf_counter()
        sid = 0
        for p in range(args.parts):
            with store.writing():
                base = store.manifest()
                w = store.new_part(base)
                for v in range(p * per_part, min(args.videos, (p + 1) * per_part)):
                    for s in range(args.segments):
                        j = (sid * args.tokens) % (4096 - args.tokens)
                        w.add(sid, SegmentRecord(f"/data/v{v}.mp4", "h", "s", s, s + 1, [s], b"\xff" * 2000,
                                                 pool[j : j + args.tokens]))
                        sid += 1
                store.commit(base, [w.close()], next_segment_id=sid)
        build_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())

        t0 = time.perf_counter()
        snap = store.snapshot()
        open_ms = (time.perf_counter() - t0) * 1000

        commit_ms, reopen_ms = [], []
        for i in range(args.deletes):
            t0 = time.perf_counter()
            with store.writing():
                store.commit(store.manifest(), delete_videos=[f"/data/v{i}.mp4"], op="delete")
            t1 = time.perf_counter()
            snap = Snapshot(root, store.manifest(), snap)
            commit_ms.append((t1 - t0) * 1000)
            reopen_ms.append((time.perf_counter() - t1) * 1000)

        t0 = time.perf_counter()
        with store.writing():
            rep = store.compact(full=True, keep_versions=1)
        compact_s = time.perf_counter() - t0
        print(json.dumps({
            "segments": sid, "index_mib": round(size / 2**20, 1), "parts": args.parts,
            "build_s": round(build_s, 2), "open_snapshot_ms": round(open_ms, 1),
            "delete_commit_ms_median": round(statistics.median(commit_ms), 1),
            "delete_reopen_view_ms_median": round(statistics.median(reopen_ms), 1),
            "manifest_kib": round((root / "manifest.json").stat().st_size / 1024, 1),
            "full_compaction_s": round(compact_s, 2), "parts_after": rep.parts_after,
            "segments_dropped": rep.segments_dropped,
        }))


if __name__ == "__main__":
    main()
