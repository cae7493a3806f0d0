"""maxsim's decode + cut detection + sampling against FFmpeg's own decode of the same file, side by side.

Issue 19 asks that the ingest's decode pass run at >= 0.90 of the rate at which FFmpeg alone decodes the
same file on the same threads. This section of ``maxsim-bench ingest`` (config keys ``ffmpeg_*``; ``--preset
film`` runs it on Big Buck Bunny) times on each video, in interleaved rounds:

- **FFmpeg decode**: libavcodec through PyAV, ``thread_type="AUTO"`` and ``thread_count=threads``, every
  frame decoded, no pixel conversion: the rate FFmpeg's own decoder reaches on this machine;
- **maxsim** per segmenter spec: :func:`maxsim.media.iter_clips` (as the engine calls it, with its
  background decode thread) with the configured frame sampler, no encoder and no timing proxies, its
  decoder on the same threads (``MAXSIM_DECODE_THREADS``) and OpenCV on as many (``cv2.setNumThreads``).

``threads = 0`` (the default) leaves the thread count to FFmpeg on both sides, as ``ffmpeg`` itself and
maxsim do by default (frame threading on the cores it sees plus one); the count FFmpeg chose is recorded
as ``decoder_threads``. A positive count pins both decoders to it.

The order of the runs rotates from round to round, so that load from other processes and a cold file cache
hit every run alike; medians are reported, the ratio is FFmpeg's median seconds over maxsim's (its
frame rate relative to FFmpeg's), and the per-round ratios show how much the machine moved.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from maxsim.bench.config import ConfigError, build
from maxsim.bench.machine import cpu_model, usable_cores
from maxsim.bench.report import Column, Run, Table
from tqdm import tqdm

from maxsim.summary import percentiles

TARGET = 0.90  # issue 19: decode + cut detection + sampling at >= 90% of FFmpeg's decode rate
FFMPEG = "FFmpeg decode"
OPENCV_THREADS_ENV = "OPENCV_FFMPEG_THREADS"  # OpenCV's own FFmpeg backend (iter_frames' fallback readers)
FIXED_BASELINE = "fixed:10"


@dataclass(frozen=True)
class RatioSettings:
    """The validated ``ffmpeg_*`` keys of an ingest config."""

    rounds: int
    threads: int
    segmenters: tuple[str, ...]
    full_decode: bool = True  # also time the first spec with the decoder's deblocking on every frame


def _whole(cfg: dict[str, Any], key: str, default: int, low: int, what: str) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be {what}, got {value!r}")
    return value


def settings(cfg: dict[str, Any]) -> RatioSettings | None:
    """The side-by-side settings of ``cfg`` (None when ``ffmpeg_ratio`` is off), checked before any work:
    ``ffmpeg_rounds`` >= 1, ``ffmpeg_threads`` >= 0 (0: FFmpeg's own choice on both sides), every spec of
    ``ffmpeg_segmenters`` loadable (empty: the configured ``segmenter`` and ``fixed:10``)."""
    from maxsim.media.segment import load_segmenter

    on = cfg.get("ffmpeg_ratio", False)
    if not isinstance(on, bool):
        raise ConfigError(f"ffmpeg_ratio must be true or false, got {on!r}")
    if not on:
        return None
    rounds = _whole(cfg, "ffmpeg_rounds", 3, 1, "a whole number of rounds >= 1")
    threads = _whole(cfg, "ffmpeg_threads", 0, 0, "a whole number of threads >= 0 (0: FFmpeg's own choice)")
    specs = cfg.get("ffmpeg_segmenters") or []
    if not isinstance(specs, list) or not all(isinstance(s, str) and s.strip() for s in specs):
        raise ConfigError(f"ffmpeg_segmenters must be a list of segmenter specs (e.g. [\"scenes\", "
                          f"\"fixed:10\"]), got {specs!r}")
    if not specs:
        specs = [str(cfg.get("segmenter") or "scenes"), FIXED_BASELINE]
    specs = list(dict.fromkeys(s.strip() for s in specs))
    for spec in specs:
        build(f"ffmpeg_segmenters: segmenter {spec!r}", load_segmenter, spec)
    full = cfg.get("ffmpeg_full_decode", True)
    if not isinstance(full, bool):
        raise ConfigError(f"ffmpeg_full_decode must be true or false, got {full!r}")
    return RatioSettings(rounds, threads, tuple(specs), full)


FULL_DECODE = " (full decode)"  # suffix of the run whose decoder deblocks every frame


@contextmanager
def decoder_setting(skip: str | None) -> Iterator[None]:
    """maxsim's decoder with ``MAXSIM_DECODE_SKIP_LOOP_FILTER=skip`` for the block (None: as it is)."""
    from maxsim.media.avframes import LOOP_FILTER_ENV

    saved = os.environ.get(LOOP_FILTER_ENV)
    if skip is not None:
        os.environ[LOOP_FILTER_ENV] = skip
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(LOOP_FILTER_ENV, None)
        else:
            os.environ[LOOP_FILTER_ENV] = saved


@contextmanager
def same_threads(threads: int) -> Iterator[None]:
    """maxsim's decoder threads (``MAXSIM_DECODE_THREADS``) and OpenCV's FFmpeg threads set to ``threads``
    (0: FFmpeg's own choice), OpenCV's own thread pool to ``threads`` (0: one per core) for the block; the
    previous settings are restored afterwards."""
    import cv2

    from maxsim.media.avframes import THREADS_ENV

    keys = (THREADS_ENV, OPENCV_THREADS_ENV)
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_cv = cv2.getNumThreads()
    for k in keys:
        os.environ[k] = str(threads)
    cv2.setNumThreads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cv2.setNumThreads(saved_cv)


def decoder_threads(path: str | Path, threads: int) -> int:
    """The threads libavcodec decodes ``path`` with when asked for ``threads`` (0: its own choice)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.thread_count = threads
        next(iter(c.decode(s)), None)
        return int(s.codec_context.thread_count or 1)


def ffmpeg_decode(path: str | Path, threads: int) -> int:
    """Frames libavcodec decodes from ``path`` with ``threads`` threads (0: as many as FFmpeg chooses; frame
    and slice threading chosen by FFmpeg), every frame decoded and nothing converted."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.thread_count = threads
        return sum(1 for _ in c.decode(s))


def maxsim_pass(path: str | Path, segmenter: Any, sampler: Any) -> tuple[int, list[tuple[float, float]]]:
    """Frames decoded and ``(start, end)`` of each clip of one :func:`maxsim.media.iter_clips` pass."""
    from maxsim.media import iter_clips

    frames = 0

    def count(_t: float) -> None:
        nonlocal frames
        frames += 1

    bounds = [(float(c.start), float(c.end)) for c, _ in iter_clips(path, segmenter, sampler, on_frame=count)]
    return frames, bounds


def measure_video(path: Path, s: RatioSettings, sampler: Any, progress: Any = None) -> list[dict[str, Any]]:
    """Rows for one video: FFmpeg's decode, then maxsim with each segmenter spec, timed in ``s.rounds``
    interleaved rounds (the order rotated each round). A run whose output changes between rounds is an
    error: decoding is deterministic, so it would mean the measurement is of different work."""
    from maxsim.media.avframes import skip_loop_filter
    from maxsim.media.segment import load_segmenter

    skip = skip_loop_filter()
    # (run name, segmenter spec, segmenter, the decoder's skip_loop_filter)
    runs: list[tuple[str, str | None, Any, str | None]] = [(FFMPEG, None, None, None)] + [
        (spec, spec, load_segmenter(spec), skip) for spec in s.segmenters]
    if s.full_decode and skip != "none":  # the same decoding work as FFmpeg's run, for comparison
        first = s.segmenters[0]
        runs.append((first + FULL_DECODE, first, load_segmenter(first), "none"))
    seconds: dict[str, list[float]] = {name: [] for name, *_ in runs}
    outputs: dict[str, Any] = {}
    with same_threads(s.threads):
        for r in range(s.rounds):
            k = r % len(runs)
            for name, _, seg, skip_filter in runs[k:] + runs[:k]:
                t0 = time.perf_counter()
                with decoder_setting(skip_filter):
                    out = ffmpeg_decode(path, s.threads) if seg is None else maxsim_pass(path, seg, sampler)
                seconds[name].append(time.perf_counter() - t0)
                if name in outputs and outputs[name] != out:
                    raise RuntimeError(f"{path.name}: {name} produced different output in round {r + 1} "
                                       f"than before ({_brief(outputs[name])} vs {_brief(out)})")
                outputs[name] = out
                if progress is not None:
                    progress.set_postfix_str(f"{path.name} round {r + 1}: {name} {seconds[name][-1]:.2f} s")
                    progress.update()
    ref, ref_all = statistics.median(seconds[FFMPEG]), seconds[FFMPEG]
    rows = []
    for name, spec, seg, skip_filter in runs:
        med = statistics.median(seconds[name])
        frames, bounds = (outputs[name], None) if seg is None else outputs[name]
        rows.append({
            "video": path.name,
            "run": name if seg is None else f"maxsim {name}",
            "segmenter": spec,
            "skip_loop_filter": skip_filter,
            "frames": frames,
            "seconds_median": med,
            "seconds_all": seconds[name],
            "fps": frames / med if med > 0 else None,
            "ratio": ref / med if med > 0 else None,
            "ratio_rounds": [a / b if b > 0 else None for a, b in zip(ref_all, seconds[name], strict=True)],
            "ratio_interval": None if seg is None else ratio_interval(ref_all, seconds[name]),
            "segments": None if bounds is None else len(bounds),
            "boundaries": bounds,
        })
    return rows


def ratio_interval(ref: list[float], run: list[float], level: float = 0.90, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float] | None:
    """A bootstrap ``level`` interval of the ratio (``median(ref) / median(run)``), the rounds resampled
    as pairs (each FFmpeg run with the run of the same round: the load on the machine moves both); None
    for fewer than 3 rounds.

    On a shared host a run's rounds move by 10-30%, so a median of 5 can land either side of the target
    by chance: the interval says how far the ratio itself could move on the same machine."""
    if len(ref) != len(run):
        raise ValueError(f"ratio_interval: {len(ref)} reference rounds against {len(run)} run rounds")
    if len(ref) < 3 or min(run) <= 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(ref), (resamples, len(ref)))
    ratios = np.median(np.asarray(ref)[idx], axis=1) / np.median(np.asarray(run)[idx], axis=1)
    tail = 50.0 * (1.0 - level)
    p = percentiles(ratios, (tail, 100.0 - tail))
    return p[f"p{tail:g}"], p[f"p{100.0 - tail:g}"]


def _brief(out: Any) -> str:
    if isinstance(out, tuple):
        return f"{out[0]} frames, {len(out[1])} segments"
    return f"{out} frames"


def run(rec: Run, s: RatioSettings, paths: list[Path], sampler: Any) -> None:
    """Measure every video of ``paths`` and keep the rows in ``results["ffmpeg_ratio"]`` (saved after each
    video, so an interrupted run keeps the videos already done)."""
    from maxsim.media.avframes import skip_loop_filter

    out: dict[str, Any] = {
        "skip_loop_filter": skip_loop_filter(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "threads": s.threads,
        "decoder_threads": decoder_threads(paths[0], s.threads) if paths else None,
        "rounds": s.rounds,
        "segmenters": list(s.segmenters),
        "sampler": getattr(sampler, "name", str(sampler)),
        "target": TARGET,
        "rows": [],
    }
    rec.put("ffmpeg_ratio", out)
    extra = int(s.full_decode and out["skip_loop_filter"] != "none")
    total = len(paths) * s.rounds * (1 + len(s.segmenters) + extra)
    with tqdm(total=total, desc="FFmpeg ratio", unit="run", disable=None) as bar:
        for path in paths:
            out["rows"].extend(measure_video(path, s, sampler, bar))
            rec.put("ffmpeg_ratio", out)


def table(results: dict[str, Any]) -> Table:
    """The side-by-side rows (empty when the section did not run)."""
    sec = results.get("ffmpeg_ratio") or {}
    rows = [{**r, "meets": None if r["segmenter"] is None or r["ratio"] is None else r["ratio"] >= TARGET}
            for r in sec.get("rows", [])]
    return Table(
        f"Against FFmpeg's own decode ({threads_label(sec)}, {sec.get('cpu', '?')}, "
        f"{sec.get('cores', '?')} cores)",
        [
            Column("video", "video"),
            Column("run", "run"),
            Column("frames", "frames"),
            Column("seconds_median", "median s", ".2f"),
            Column("fps", "frames/s", ",.0f"),
            Column("ratio", "ratio to FFmpeg", ".2f"),
            Column("meets", f">= {TARGET:.2f}", lambda v: "yes" if v else "no"),
            Column("ratio_interval", "90% interval", lambda v: f"{v[0]:.2f}-{v[1]:.2f}"),
            Column("ratio_rounds", "ratio per round", ".2f"),
            Column("seconds_all", "s per round", ".2f"),
            Column("segments", "segments"),
        ],
        rows,
        note=f"{_rounds(sec.get('rounds'))}; ratio: "
        "FFmpeg's median seconds over the run's, i.e. its frame rate relative to FFmpeg's decode (libavcodec "
        "via PyAV, every frame, nothing converted); maxsim rows: iter_clips (decode + cut detection + "
        f"sampling with {sec.get('sampler', '?')}, no encoder) on the same threads, its decoder skipping the "
        f"deblocking of {sec.get('skip_loop_filter', '?')} frames (MAXSIM_DECODE_SKIP_LOOP_FILTER; 'noref': "
        "frames no other frame is predicted from); '(full decode)': deblocking every frame, as FFmpeg's run; "
        "90% interval: of the ratio, bootstrapped over the rounds taken in pairs (how far it moves by chance "
        "on this machine; from 3 rounds).",
    )


def threads_label(sec: dict[str, Any]) -> str:
    """"2 threads", or "FFmpeg's own thread count (3)" for ``threads = 0``."""
    threads, chosen = sec.get("threads", "?"), sec.get("decoder_threads")
    if threads == 0:
        return f"FFmpeg's own thread count ({chosen if chosen else '?'})"
    return f"{threads} threads"


def _rounds(n: Any) -> str:
    return "1 round" if n == 1 else f"medians of {n} interleaved rounds (the order rotated each round)"


def plot(results: dict[str, Any], out_dir: Path) -> Path | None:
    """Bars of each maxsim run's ratio (dots: the rounds) against the 0.90 target line, or None."""
    rows = [r for r in (results.get("ffmpeg_ratio") or {}).get("rows", []) if r["segmenter"] is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sec = results["ffmpeg_ratio"]
    # the run's name, not its spec: a spec can run twice (with and without the decoder's full deblocking)
    labels = [f"{r['video']}\n{r.get('run', r['segmenter']).removeprefix('maxsim ')}" for r in rows]
    vals = [r["ratio"] or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(rows) + 2), 4.2), dpi=120)
    colors = ["tab:green" if v >= TARGET else "tab:orange" for v in vals]
    bars = ax.bar(range(len(rows)), vals, color=colors)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=9, label_type="center")  # off the dots
    labelled = False  # the interval's legend entry, with the first row that has one
    for i, r in enumerate(rows):
        pts = [p for p in r["ratio_rounds"] if p is not None]
        ax.scatter([i] * len(pts), pts, color="black", s=10, zorder=3, label="rounds" if i == 0 else None)
        if r.get("ratio_interval"):
            lo, hi = r["ratio_interval"]
            mid = min(max(r["ratio"] or lo, lo), hi)
            ax.errorbar([i + 0.25], [mid], yerr=[[mid - lo], [hi - mid]], fmt="none",
                        ecolor="dimgray", capsize=4, zorder=3, label=None if labelled else "90% interval")
            labelled = True
    ax.axhline(TARGET, color="tab:red", linestyle="--", linewidth=1, label=f"target {TARGET:.2f}")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    highs = [r["ratio_interval"][1] for r in rows if r.get("ratio_interval")]
    top = max(vals + [p or 0.0 for r in rows for p in r["ratio_rounds"]] + highs + [1.0])
    ax.set_ylim(0, top * 1.15)
    n = sec["rounds"]
    ax.set_ylabel("rate relative to FFmpeg's decode")
    ax.set_title(f"Decode + cuts + sampling vs FFmpeg's own decode\n{threads_label(sec)}, median of {n} "
                 f"round{'' if n == 1 else 's'} (dots: each round), {sec.get('cpu', '?')}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "ingest_ffmpeg_ratio.png"
    fig.savefig(path)
    plt.close(fig)
    return path
