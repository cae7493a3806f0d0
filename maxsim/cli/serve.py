"""``maxsim serve``: the HTTP service and search page over an index."""

from __future__ import annotations

import argparse
import sys

import torch

from maxsim.cli.common import device_kwargs, encoder_arg
from maxsim.engine import Engine
from maxsim.search.options import check_search_options
from maxsim.search.prune.files import read_prune_manifest
from maxsim.server.state import is_loopback


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from maxsim.server import create_app
    except ImportError as e:
        print(f"error: maxsim serve needs the serve extra ({e.name} is missing): "
              'pip install -e ".[serve]" in the maxsim checkout', file=sys.stderr)
        return 2
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
        torch.set_num_threads(args.torch_threads)
    engine = Engine(args.index, encoder=encoder_arg(args), create=False, segmenter=args.segmenter,
                    reranker=args.reranker, **device_kwargs(args))
    sampling = {"fps": args.fps, "max_frames": args.max_frames, "max_side": args.max_side}
    sampling = {k: v for k, v in sampling.items() if v is not None}
    if sampling:  # POST /ingest samples with the index's recipe, changed only by the flags given
        engine.sampler = engine.sampler.replace(**sampling)
    if args.pruned and not (read_prune_manifest(engine.path) or {}).get("parts"):
        print(f"warning: {args.index} has no prune index: pruned searches score every segment until you run "
              f"`maxsim prune {args.index}`", file=sys.stderr)
    app = create_app(
        engine,
        api_key=args.api_key,
        ingest_root=args.ingest_root,
        max_body_bytes=args.max_body_bytes,
        max_image_bytes=args.max_image_bytes,
        max_k=args.max_k,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        cors_origins=args.cors_origin,
        search_options=search_options,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=not args.quiet)
    return 0
