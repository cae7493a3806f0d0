"""Side by side on one video: FFmpeg's own decode (libavcodec through PyAV, every frame decoded, no pixel
conversion) against maxsim's :func:`~maxsim.media.iter_frames` (OpenCV's FFmpeg, every frame converted to
full-size BGR), and maxsim's decode + cut detection + sampling (:func:`maxsim.media.iter_clips`: PyAV,
converting only the detection copy and the sampled frames) with each segmenter, all on the same threads.

Runs are interleaved ``repeats`` times so that load from other processes on the machine hits every setting
alike; medians and their ratio to FFmpeg's rate are written as JSON and Markdown. Usage::

    python -m bench.ffmpeg_ratio VIDEO OUT_STEM [--repeats 3] [--threads 2] [--segmenters scenes fixed:10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def ffmpeg_decode(path: str, threads: int) -> int:
    """Frames decoded by libavcodec with ``threads`` threads (frame threading), nothing converted."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.thread_count = threads
        return sum(1 for _ in c.decode(s))


def maxsim_decode(path: str) -> int:
    from maxsim.media.video import iter_frames

    return sum(1 for _ in iter_frames(path, prefetch=8))


def maxsim_clips(path: str, segmenter: str) -> tuple[int, list[tuple[float, float]]]:
    from maxsim.media import FrameSampler, iter_clips

    clips = [c for c, _ in iter_clips(path, segmenter, FrameSampler(fps=2.0, max_frames=16, max_side=448))]
    return len(clips), [(c.start, c.end) for c in clips]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("out_stem", help="results written to OUT_STEM.json and OUT_STEM.md")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--segmenters", nargs="+", default=["scenes", "fixed:10"])
    a = ap.parse_args(argv)
    os.environ.setdefault("OPENCV_FFMPEG_THREADS", str(a.threads))
    os.environ.setdefault("MAXSIM_DECODE_THREADS", str(a.threads))  # iter_clips' PyAV decoder
    import cv2

    cv2.setNumThreads(a.threads)
    runs: dict[str, Any] = {"ffmpeg decode": lambda: ffmpeg_decode(a.video, a.threads),
                            "maxsim iter_frames (BGR)": lambda: maxsim_decode(a.video)}
    for spec in a.segmenters:
        runs[f"maxsim decode+{spec}+sample"] = lambda spec=spec: maxsim_clips(a.video, spec)
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, Any] = {}
    for r in range(a.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            outputs[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name}: {seconds[name][-1]:.2f} s", flush=True)
    frames = outputs["ffmpeg decode"]
    ref = statistics.median(seconds["ffmpeg decode"])
    rows = []
    for name in runs:
        med = statistics.median(seconds[name])
        out = outputs[name]
        rows.append({"run": name, "seconds_median": med, "seconds_all": seconds[name], "fps": frames / med,
                     "ratio_to_ffmpeg": ref / med,
                     "segments": out[0] if isinstance(out, tuple) else None,
                     "boundaries": out[1] if isinstance(out, tuple) else None})
    result = {"video": a.video, "frames": frames, "threads": a.threads, "repeats": a.repeats,
              "cpu": cpu_name(), "cores": os.cpu_count(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    stem = Path(a.out_stem)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Decode rate against FFmpeg's own decode: {Path(a.video).name}", "",
             f"- {frames} frames, {a.threads} threads, medians of {a.repeats} interleaved rounds, "
             f"{result['cpu']} ({result['cores']} cores, shared with other processes), {result['date']}", "",
             "| run | median s | frames/s | ratio to FFmpeg decode | segments |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        segs = "" if row["segments"] is None else row["segments"]
        lines.append(f"| {row['run']} | {row['seconds_median']:.2f} | {row['fps']:.0f} | "
                     f"{row['ratio_to_ffmpeg']:.2f} | {segs} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
