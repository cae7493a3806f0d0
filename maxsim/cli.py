"""The ``maxsim`` command: ingest videos into an index, search it, show what it holds."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from maxsim.encoders import DEFAULT_ENCODER, registered_encoders
from maxsim.store import KEEP_VERSIONS, STORAGE_DTYPES, TARGET_PART_BYTES, storage_dtype


def _engine(args: argparse.Namespace, create: bool):
    from maxsim.engine import Engine

    return Engine(args.index, encoder=_encoder_arg(args), create=create,
                  dtype=getattr(args, "dtype", "float16"), reranker=getattr(args, "reranker", None))


def _recorded_reduction(index: str | os.PathLike) -> tuple[str, dict] | None:
    """``(encoder name, {"factor", "dedup", "window"})`` of the token reduction an existing index was built
    with (read from its encoder name, ``"<inner>+pool(...)"``); None for a missing or unreduced index."""
    from maxsim.pooling import split_pool_spec
    from maxsim.store import IndexNotFoundError, Store

    try:
        name = str(Store(index).manifest().encoder.get("name", ""))
    except IndexNotFoundError:
        return None
    try:
        split = split_pool_spec(name)
    except ValueError:  # a name that merely contains "+pool(": not one of ours
        return None
    return None if split is None else (name, split[1])


def _encoder_arg(args: argparse.Namespace) -> str | None:
    """``--encoder``, wrapped in the index's token reduction when the index records one and the spec
    given has none: the reduction belongs to the index, like its dtype."""
    from maxsim.pooling import pool_suffix

    enc = getattr(args, "encoder", None)
    if enc is None or "+pool(" in enc:
        return enc
    recorded = _recorded_reduction(args.index)
    return enc if recorded is None else enc + pool_suffix(**recorded[1])


def _without_pool(spec: str) -> str:
    """An encoder spec without its ``+pool(...)`` (token reduction) suffixes."""
    from maxsim.pooling import split_pool_spec

    while (split := split_pool_spec(spec)) is not None:
        spec = split[0]
    return spec


_UNSET = object()


def _pool_arg(key: str):
    """An argparse type for token-reduction setting ``key`` (checked by maxsim.pooling)."""
    from maxsim.pooling import parse_pool_setting

    def parse(text: str):
        try:
            return parse_pool_setting(key, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r} is not {e}") from None

    return parse


_pool_factor, _dedup = _pool_arg("factor"), _pool_arg("dedup")


def _fmt_reduction(r: dict) -> str:
    if r["factor"] == 1 and r["dedup"] is None:
        return "no token reduction"
    dd = "none" if r["dedup"] is None else f"{r['dedup']:g}"
    return f"token reduction --pool-factor {r['factor']:g} --dedup {dd} (window {r['window']})"


_NO_REDUCTION = {"factor": 1.0, "dedup": None, "window": 1024}


def _reduction_args(args: argparse.Namespace) -> str | None:
    """Apply ``--pool-factor`` / ``--dedup``: on a new index, wrap the chosen encoder spec (a reduction
    not asked for is off); on an existing one, check them against what it was built with. Returns an
    error message, or None."""
    from maxsim.pooling import pool_suffix

    given = {}
    if args.pool_factor is not None:
        given["factor"] = args.pool_factor
    if args.dedup is not _UNSET:
        given["dedup"] = args.dedup
    if not given:
        return None
    flags = " ".join(f"--{'pool-factor' if k == 'factor' else 'dedup'} {'none' if v is None else f'{v:g}'}"
                     for k, v in given.items())
    if (Path(args.index) / "manifest.json").exists():
        recorded = _recorded_reduction(args.index)
        have = _NO_REDUCTION if recorded is None else recorded[1]
        if any(v != have[k] for k, v in given.items()):
            return (f"{args.index} was built with {_fmt_reduction(have)}, and an index keeps the reduction "
                    f"it was built with; this ingest asks for {flags}. Drop the flag(s) to add videos "
                    "with the index's own settings, or ingest into a new index folder to use others")
        return None
    settings = {**_NO_REDUCTION, **given}
    if settings == _NO_REDUCTION:
        return None  # every reduction asked for is off
    if args.encoder is not None and "+pool(" in args.encoder:
        return (f"--encoder {args.encoder!r} already sets token reduction with '+pool(...)': "
                f"leave out {flags}, or give the encoder without '+pool(...)'")
    from maxsim.encoders import DEFAULT_ENCODER

    base = args.encoder or DEFAULT_ENCODER
    args.encoder = base + pool_suffix(**settings)
    return None


# Ingest presets: encoder and frame sampling that suit a machine. Flags given explicitly win.
PRESETS: dict[str, dict] = {
    "default": {"encoder": None, "fps": 2.0, "max_frames": 16},
    # CPU-only machines: ColQwen3 with a 256-visual-token budget per clip, 1 fps, at most 4 frames.
    "cpu": {"encoder": "colqwen3-cpu", "fps": 1.0, "max_frames": 4},
}


def _cmd_ingest(args: argparse.Namespace) -> int:
    from maxsim.frames import FrameSampler

    preset = PRESETS[args.preset]
    if not (Path(args.index) / "manifest.json").exists():  # a new index: the preset picks the encoder
        if args.encoder is None:
            args.encoder = preset["encoder"]
        elif preset["encoder"] and _without_pool(args.encoder) not in registered_encoders():
            args.encoder = f"{preset['encoder']}:{args.encoder}"  # the preset's settings, that checkpoint
        if args.encoder is None and DEFAULT_ENCODER is None:
            print("error: --encoder is required to create a new index", file=sys.stderr)
            return 2
    problem = _reduction_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    fps = preset["fps"] if args.fps is None else args.fps
    max_frames = preset["max_frames"] if args.max_frames is None else args.max_frames
    segmenter = f"fixed:{args.fixed}" if args.fixed is not None else ("scenes" if args.scenes else None)
    engine = _engine(args, create=True)
    engine.sampler = FrameSampler(fps=fps, max_frames=max_frames, max_side=args.max_side)
    if args.ray:
        from maxsim import distributed

        distributed.init(address=args.ray_address)
    report = engine.ingest(args.videos, segmenter=segmenter or "fixed:10", progress=not args.quiet,
                           ray=args.ray, ray_workers=args.ray_workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report)
    return 0 if report.ok else 1


def _cmd_search(args: argparse.Namespace) -> int:
    engine = _engine(args, create=False)
    time_range = tuple(args.time_range) if args.time_range else None
    t0 = time.perf_counter()
    options = {}
    if args.pruned:
        options = {"mode": "pruned", "n_candidates": args.candidates, "nprobe": args.nprobe,
                   "n_refine": args.refine}
    # neither output prints the JPEG bytes: do not read them
    if args.rerank:
        options["rerank"] = args.rerank
    hits = engine.search(args.text, k=args.k, videos=args.video or None, time_range=time_range,
                         thumbnails=False, **options)
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=1))
        return 0
    if not hits:
        print(f"no hits ({len(engine)} segments searched)")
        return 0
    width = max(len(h.video) for h in hits)
    for i, h in enumerate(hits, 1):
        span = f"{h.start:8.2f}-{h.end:<8.2f}"
        reranked = "rerank" in h.scores and "maxsim" in h.scores
        first = f"  (maxsim {h.scores['maxsim']:.3f})" if reranked else ""
        print(f"{i:3d}  {h.score:8.3f}  {h.video:<{width}}  {span}  best {h.best_time:.2f}{first}")
    print(f"({len(engine)} segments searched in {ms:.1f} ms)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from maxsim.candidates import prune_summary
    from maxsim.pooling import split_pool_spec
    from maxsim.store import Snapshot, Store

    store = Store(args.index)
    man = store.manifest(args.version)
    try:
        split = split_pool_spec(str(man.encoder.get("name", "")))
    except ValueError:
        split = None
    reduction = None if split is None else split[1]
    catalog = man.videos if man.videos is not None else Snapshot(Path(args.index), man).manifest.videos
    size = sum(f.stat().st_size for f in Path(args.index).rglob("*") if f.is_file())
    info = {
        "path": str(args.index),
        "format_version": man.format_version,
        "version": man.version,
        "latest_version": store.manifest().version,
        "versions_kept": store.versions(),
        "encoder": man.encoder,
        "reduction": reduction,  # token reduction at ingest: {"factor", "dedup", "window"}, or None
        "dim": man.dim,
        "dtype": man.dtype,
        "videos": len(catalog or {}),
        "segments": man.n_segments,
        "tokens": int(sum(p["n_tokens"] for p in man.parts)),
        "deleted_segments": man.n_deleted,
        "parts": len(man.parts),
        "bytes_on_disk": size,
        "prune_index": prune_summary(args.index, [p["id"] for p in man.parts]),
        "history": man.history,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key in ("path", "format_version", "version", "latest_version", "versions_kept", "dim", "dtype",
                "videos", "segments", "tokens", "deleted_segments", "parts", "bytes_on_disk"):
        print(f"{key:>17}: {info[key]}")
    print(f"{'encoder':>17}: {json.dumps(man.encoder)}")
    if reduction is None:
        print(f"{'token reduction':>17}: none")
    else:
        dd = "none" if reduction["dedup"] is None else f"{reduction['dedup']:g}"
        print(f"{'token reduction':>17}: pool factor {reduction['factor']:g}, dedup {dd}, "
              f"window {reduction['window']}")
    pi = info["prune_index"]
    if pi is None:
        print(f"{'prune index':>17}: none (`maxsim prune {args.index}` builds it)")
    else:
        bits = ", ".join("no residual codes" if b is None else f"{b}-bit residual codes"
                         for b in pi["residual_bits"]) or "-"
        cents = "/".join(str(c) for c in pi["centroids_per_part"]) or "-"
        print(f"{'prune index':>17}: {pi['parts_covered']} of {pi['parts']} parts, {_size(pi['bytes'])}, "
              f"{cents} centroids per part, {bits}")
    print("history:")
    for h in man.history[-args.history:] if args.history else man.history:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["time"]))
        extra = {k: v for k, v in h.items() if k not in ("version", "time", "op")}
        print(f"  v{h['version']:<5} {when}  {h['op']:<8} {json.dumps(extra) if extra else ''}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from maxsim.server import create_app
    except ImportError as e:
        print(f"error: maxsim serve needs the serve extra ({e.name} is missing): "
              'pip install "maxsim[serve]"', file=sys.stderr)
        return 2
    from maxsim.search_options import check_search_options
    from maxsim.server.app import is_loopback

    if not is_loopback(args.host) and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can search, "
              "stream the indexed videos and delete them", file=sys.stderr)
    knobs = {"n_candidates": args.candidates, "n_refine": args.refine, "nprobe": args.nprobe}
    if not args.pruned and any(v is not None for v in knobs.values()):
        print("error: --candidates, --refine and --nprobe set the defaults of pruned search: add --pruned",
              file=sys.stderr)
        return 2
    search_options = {"mode": "pruned", **knobs} if args.pruned else {}
    if args.rerank:
        search_options["rerank"] = args.rerank
    try:  # before the model is loaded
        check_search_options(search_options, "maxsim serve")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    from maxsim.candidates import read_prune_manifest
    from maxsim.engine import Engine
    from maxsim.frames import FrameSampler

    engine = Engine(
        args.index,
        encoder=_encoder_arg(args),
        create=False,
        segmenter=args.segmenter,
        sampler=FrameSampler(fps=args.fps, max_frames=args.max_frames, max_side=args.max_side),
        reranker=args.reranker,
    )
    if args.pruned and not (read_prune_manifest(engine.path) or {}).get("parts"):
        print(f"warning: {args.index} has no prune index: pruned searches score every segment until you run "
              f"`maxsim prune {args.index}`", file=sys.stderr)
    app = create_app(
        engine,
        api_key=args.api_key,
        ingest_root=args.ingest_root,
        max_body_bytes=args.max_body_bytes,
        max_k=args.max_k,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        cors_origins=args.cors_origin,
        search_options=search_options,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=not args.quiet)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from maxsim.engine import video_key

    if not args.videos and args.prefix is None:
        print("error: give videos to delete or --prefix", file=sys.stderr)
        return 2
    engine = _engine(args, create=False)
    removed = engine.delete_where(prefix=args.prefix, videos=args.videos or None)
    if args.json:
        print(json.dumps({"deleted": removed, "version": engine.version}, indent=1))
    else:
        for v, n in sorted(removed.items()):
            print(f"deleted {v} ({n} segments)")
        print(f"deleted {len(removed)} video(s); index version {engine.version}")
    wanted = {video_key(v) for v in args.videos}
    missing = sorted(wanted - set(removed))
    for v in missing:
        print(f"not in the index: {v}", file=sys.stderr)
    return 1 if missing or not removed else 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _cmd_compact(args: argparse.Namespace) -> int:
    engine = _engine(args, create=False)
    rep = engine.compact(full=args.full, keep_versions=args.keep_versions,
                         target_part_bytes=int(args.target_part_mb * (1 << 20)), progress=not args.quiet)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1))
    elif rep.version is None:
        print(f"nothing to compact ({rep.parts_before} parts); removed {rep.files_removed} unused file(s)")
    else:
        print(
            f"compacted {rep.parts_rewritten} of {rep.parts_before} parts into {rep.parts_after} parts, "
            f"dropped {rep.segments_dropped} deleted segments ({_size(rep.bytes_before)} -> "
            f"{_size(rep.bytes_after)} of vectors); version {rep.version}; removed {rep.files_removed} "
            "unused file(s)"
        )
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    if args.bits not in (0, 1, 2, 4, 8):
        print(f"maxsim prune: --bits must be 0, 1, 2, 4 or 8, got {args.bits}", file=sys.stderr)
        return 2
    engine = _engine(args, create=False)
    t0 = time.perf_counter()
    try:
        built = engine.build_prune_index(n_centroids=args.centroids, progress=not args.quiet,
                                         nbits=args.bits or None, rebuild=args.rebuild, device=args.device)
    except ValueError as e:
        print(f"maxsim prune: {e}", file=sys.stderr)
        return 2
    secs = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"parts_built": built, "seconds": secs}, indent=1))
    else:
        print(f"prune index: built {len(built)} part(s) in {secs:.1f} s; "
              f"{len(engine.manifest.parts) - len(built)} already had one")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``maxsim`` command."""
    p = argparse.ArgumentParser(prog="maxsim", description="Find moments in video with MaxSim search.")
    sub = p.add_subparsers(dest="command", required=True)

    enc_help = ("encoder: a registered name, a Hugging Face id or local folder, or package.module:attr, "
                "optionally followed by +pool(factor=F,dedup=COS,window=N) (token reduction; an index "
                "built with one wraps the encoder named in its own)")
    if DEFAULT_ENCODER:
        enc_help += f" (default: {DEFAULT_ENCODER}, or the one recorded in an existing index)"
    else:
        enc_help += " (required to create an index; an existing index records its own)"

    rr_help = ("reranker for --rerank: a registered name, name:<checkpoint> (a hub id or folder), or "
               "package.module:attr (default: qwen3-vl-reranker, i.e. Qwen/Qwen3-VL-Reranker-2B)")

    ing = sub.add_parser("ingest", help="add videos (files or folders) to an index")
    ing.add_argument("index", help="index folder (created if missing)")
    ing.add_argument("videos", nargs="+", help="video files or folders")
    mode = ing.add_mutually_exclusive_group()
    mode.add_argument("--fixed", type=float, metavar="SECONDS", help="fixed-length segments (default 10 s)")
    mode.add_argument("--scenes", action="store_true", help="scene segmentation with PySceneDetect")
    ing.add_argument("--encoder", help=enc_help)
    ing.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="encoder and sampling for the machine: 'cpu' = colqwen3-cpu, 1 fps, 4 frames")
    ing.add_argument("--fps", type=float, help="frames sampled per second (default 2; preset cpu: 1)")
    ing.add_argument("--max-frames", type=int, help="frames per segment at most (default 16; preset cpu: 4)")
    ing.add_argument("--max-side", type=int, metavar="PIXELS",
                     help="longest side of the sampled frames (default: the size the encoder wants, e.g. "
                     "ColQwen3's visual-token budget spread over --max-frames; 448 for encoders that say "
                     "none)")
    ing.add_argument("--pool-factor", type=_pool_factor, metavar="F",
                     help="token reduction: pool each segment's tokens to 1/F of them (Ward clustering; "
                     'needs SciPy: pip install "maxsim[scale]"). New index only: an existing one keeps its '
                     "own and refuses other settings")
    ing.add_argument("--dedup", type=_dedup, default=_UNSET, metavar="COS",
                     help="token reduction: drop a token when a token kept for the previous frame has "
                     "cosine >= COS with it (e.g. 0.95; 'none': off). New index only, as --pool-factor; "
                     "a reduction not asked for is off")
    ing.add_argument("--dtype", default="float16", type=storage_dtype, choices=STORAGE_DTYPES,
                     help="storage dtype of a new index (default float16; int8 and float8_e4m3fn keep a "
                     "float32 scale per token and take about half the bytes; aliases fp16, bf16, fp32, fp8)")
    ing.add_argument("--json", action="store_true", help="print the report as JSON")
    ing.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ing.add_argument("--ray", action="store_true",
                     help='decode and encode in a Ray Data pipeline (pip install "maxsim[ray]")')
    ing.add_argument("--ray-workers", type=int, default=2, metavar="N",
                     help="encoder actors (one GPU each where the cluster has GPUs; default 2)")
    ing.add_argument("--ray-address", metavar="ADDRESS",
                     help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    ing.set_defaults(func=_cmd_ingest)

    se = sub.add_parser("search", help="search an index with text")
    se.add_argument("index")
    se.add_argument("text")
    se.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    se.add_argument("--video", action="append", help="only this video (repeatable)")
    se.add_argument("--time-range", type=float, nargs=2, metavar=("START", "END"),
                    help="only segments overlapping this time range (seconds)")
    se.add_argument("--encoder", help=enc_help)
    se.add_argument("--json", action="store_true", help="print hits as JSON")
    se.add_argument("--pruned", action="store_true",
                    help="re-rank only candidates from the prune index (build it with `maxsim prune`)")
    se.add_argument("--candidates", type=int, metavar="N",
                    help="segments scored exactly with --pruned (default: 0.1%% of the index, >= 100 k)")
    se.add_argument("--refine", type=int, metavar="N",
                    help="segments scored from residual codes with --pruned, the candidates being the best "
                    "of them (default: 10%% of the index, at least 1000 k; 0: no residual stage)")
    se.add_argument("--nprobe", type=int, default=8, help="centroids probed per query token (default 8)")
    se.add_argument("--rerank", type=int, default=0, metavar="N",
                    help="re-score the best N hits (at least -k) with the reranker, which decodes their "
                    "frames again from the videos (default 0: off)")
    se.add_argument("--reranker", metavar="SPEC", help=rr_help)
    se.set_defaults(func=_cmd_search)

    pr = sub.add_parser("prune", help="build the centroid index that `search --pruned` uses (kept up to date "
                        "by later ingests)")
    pr.add_argument("index")
    pr.add_argument("--centroids", type=int, metavar="N",
                    help="centroids per part (default: PLAID's 16 * sqrt(tokens of the part))")
    pr.add_argument("--bits", type=int, default=2, metavar="B",
                    help="bits per dimension of the residual codes (1, 2, 4 or 8; 0: none, a smaller index "
                    "whose pruned search skips the residual stage; default 2)")
    pr.add_argument("--device", metavar="DEV",
                    help="where k-means and the token assignment run: cpu (default) or cuda[:N]")
    pr.add_argument("--rebuild", action="store_true",
                    help="rebuild the prune index of every part (after changing --centroids or --bits, or "
                    "to add residual codes to an index built before they existed)")
    pr.add_argument("--encoder", help=enc_help)
    pr.add_argument("--json", action="store_true")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_prune)

    sv = sub.add_parser("serve", help="serve an index over HTTP, with a search page at /")
    sv.add_argument("index", help="index folder (must exist)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key", default=os.environ.get("MAXSIM_API_KEY"),
                    help="require this key in an X-API-Key header (default: $MAXSIM_API_KEY, else none)")
    sv.add_argument("--encoder", help=enc_help)
    sv.add_argument("--ingest-root", metavar="DIR",
                    help="enable POST /ingest for files under DIR only (default: ingest disabled)")
    sv.add_argument("--segmenter", default="fixed:10",
                    help="segmentation of videos ingested through POST /ingest: fixed:SECONDS or scenes "
                    "(default fixed:10, as maxsim ingest)")
    sv.add_argument("--fps", type=float, default=2.0,
                    help="frames sampled per second for POST /ingest (default 2)")
    sv.add_argument("--max-frames", type=int, default=16, help="frames per segment at most for POST /ingest")
    sv.add_argument("--max-side", type=int, metavar="PIXELS",
                    help="longest side of sampled frames for POST /ingest (default: the encoder's size)")
    sv.add_argument("--rerank", type=int, metavar="N",
                    help="searches that do not set \"rerank\" re-score the best N hits with the reranker "
                    "(default: off)")
    sv.add_argument("--reranker", metavar="SPEC", help=rr_help)
    sv.add_argument("--max-queue", type=int, default=256,
                    help="searches waiting beyond which new ones get 503 + Retry-After (default 256)")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20,
                    help="larger request bodies get 413 (default 1 MiB)")
    sv.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for (default 100)")
    sv.add_argument("--batch-window-ms", type=float, default=2.0,
                    help="how long a search waits for concurrent ones to batch with (default 2 ms)")
    sv.add_argument("--pruned", action="store_true",
                    help="searches that do not set \"mode\" run pruned (build the prune index with `maxsim "
                    "prune`; without one a pruned search scores every segment)")
    sv.add_argument("--candidates", type=int, metavar="N",
                    help="with --pruned: default n_candidates, segments scored exactly (default: 0.1%% of "
                    "the index, >= 100 k)")
    sv.add_argument("--refine", type=int, metavar="N",
                    help="with --pruned: default n_refine, segments scored from residual codes (default: "
                    "10%% of the index, at least 1000 k; 0: no residual stage)")
    sv.add_argument("--nprobe", type=int, metavar="N",
                    help="with --pruned: default nprobe, centroids probed per query token (default 8)")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="let pages from this web origin call the API (repeatable; default none)")
    sv.add_argument("--torch-threads", type=int, metavar="N",
                    help="torch intra-op threads (default: torch's choice; 1 can be faster for small "
                    "indexes on a busy machine)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.add_argument("-q", "--quiet", action="store_true", help="no access log")
    sv.set_defaults(func=_cmd_serve)

    inf = sub.add_parser("info", help="show an index's encoder, size, versions and history")
    inf.add_argument("index")
    inf.add_argument("--version", type=int, help="describe this retained version (default: the latest)")
    inf.add_argument("--history", type=int, default=0, metavar="N", help="show only the last N commits")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=_cmd_info)

    de = sub.add_parser("delete", help="remove videos from an index (by path, or all under a folder)")
    de.add_argument("index")
    de.add_argument("videos", nargs="*", help="video paths to remove")
    de.add_argument("--prefix", help="remove every video under this folder")
    de.add_argument("--encoder", help=enc_help)
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=_cmd_delete)

    co = sub.add_parser("compact", help="merge small parts, drop deleted segments, remove unused files")
    co.add_argument("index")
    co.add_argument("--full", action="store_true",
                    help="rewrite every part with a deleted segment and merge all")
    co.add_argument("--keep-versions", type=int, default=KEEP_VERSIONS, metavar="N",
                    help=f"keep the files of the last N versions (default {KEEP_VERSIONS})")
    co.add_argument("--target-part-mb", type=float, default=TARGET_PART_BYTES / (1 << 20), metavar="MB",
                    help=f"size of merged parts (default {TARGET_PART_BYTES >> 20})")
    co.add_argument("--encoder", help=enc_help)
    co.add_argument("--json", action="store_true")
    co.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    co.set_defaults(func=_cmd_compact)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``maxsim`` command; returns the exit code (0 ok, 1 some files failed, 2 usage/error)."""
    args = build_parser().parse_args(argv)
    from maxsim.store import IndexError_

    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (IndexError_, ValueError, KeyError, FileExistsError, PermissionError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
