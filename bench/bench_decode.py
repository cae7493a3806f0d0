"""Throughput of the decode -> segment -> sample stage on a synthetic video (frames per second decoded).

    python bench/bench_decode.py --size 1280x720 --fps 30 --seconds 60 --reps 3

Prints one JSON line per configuration (median of ``--reps`` runs): decode only, fixed segmentation
and scene detection, each with and without the background decode thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from maxsim.frames import FrameSampler, iter_clips
from maxsim.segment import FixedSegmenter, SceneSegmenter
from maxsim.synthetic import random_scenes, write_video
from maxsim.video import iter_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--video", help="an existing video instead of a synthetic one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.video:
            path = Path(args.video)
        else:
            w, h = (int(x) for x in args.size.split("x"))
            scenes = random_scenes(0, args.seconds, (2.0, 7.0))
            path = write_video(Path(tmp) / "bench.mp4", scenes, fps=args.fps, size=(w, h))
        n_frames = sum(1 for _ in iter_frames(path))

        def decode(prefetch: int) -> None:
            for _ in iter_frames(path, prefetch=prefetch):
                pass

        configs = {
            "decode": lambda pf: decode(pf),
            "fixed+sample": lambda pf: list(
                iter_clips(path, FixedSegmenter(10.0), FrameSampler(), prefetch=pf)
            ),
            "scenes+sample": lambda pf: list(iter_clips(path, SceneSegmenter(), FrameSampler(), prefetch=pf)),
        }
        for name, fn in configs.items():
            times: dict[int, list[float]] = {0: [], 8: []}
            for _ in range(args.reps):  # interleaved, so that load changes hit both settings alike
                for pf in times:
                    t0 = time.perf_counter()
                    fn(pf)
                    times[pf].append(time.perf_counter() - t0)
            for pf, ts in times.items():
                t = statistics.median(ts)
                print(
                    json.dumps(
                        {
                            "stage": name,
                            "prefetch": pf,
                            "video": str(path.name),
                            "frames": n_frames,
                            "seconds": round(t, 3),
                            "fps": round(n_frames / t, 1),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
