"""``maxsim search``: search an index with text, an image (``--image``), a clip (``--clip VIDEO:START:END``)
or a segment (``--like ID``), text and the others together too (optionally re-ranking the best hits of a
text query) and print the hits with their segment ids, or the moments they make (``--group
moments|video``); ``--explain DIR`` writes a PNG per hit."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from maxsim.cli.common import channel_options, open_engine
from maxsim.engine import Engine
from maxsim.errors import VideoError
from maxsim.query import Query
from maxsim.specs import fmt_num, plural
from maxsim.types import Hit, Moment


def write_explanations(engine: Engine, hits: list[Hit], folder: str) -> None:
    """One PNG per hit in ``folder`` (created), named by rank, video and start; a video that cannot be
    read any more is reported on stderr and skipped."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, h in enumerate(hits, 1):
        name = out / f"{i:02d}-{Path(h.video).stem}-{h.start:.2f}.png"
        try:
            name.write_bytes(engine.explain(h))
        except (VideoError, ValueError) as e:
            print(f"warning: no explanation for hit {i}: {e}", file=sys.stderr)
            continue
        print(f"wrote {name}", file=sys.stderr)


def print_moments(engine: Engine, moments: list[Moment], as_json: bool) -> None:
    if as_json:
        print(json.dumps([m.to_dict() for m in moments], indent=1))
        return
    if not moments:
        print(f"no moments ({plural(len(engine), 'segment')} searched)")
        return
    width = max(len(m.video) for m in moments)
    for i, m in enumerate(moments, 1):
        span = f"{m.start:8.2f}-{m.end:<8.2f}"
        print(f"{i:3d}  {fmt_num(m.score):>8}  {m.video:<{width}}  {span}  best {m.best_time:.2f}  "
              f"({plural(len(m.segments), 'segment')})")


def clip_arg(text: str | None) -> tuple[str, float, float] | None:
    """``VIDEO:START:END`` (the video path may hold colons) as ``(video, start, end)``."""
    if text is None:
        return None
    try:
        video, start, end = text.rsplit(":", 2)
        return video, float(start), float(end)
    except ValueError:
        raise ValueError(f"--clip {text!r}: expected VIDEO:START:END with START and END in seconds, e.g. "
                         "cam1.mp4:12:20") from None


def cmd_search(args: argparse.Namespace) -> int:
    request = Query(args.text, image=args.image, clip=clip_arg(args.clip), like=args.like)  # checked first
    engine = open_engine(args, create=False, reranker=args.reranker)
    time_range = tuple(args.time_range) if args.time_range else None
    t0 = time.perf_counter()
    options = {}
    if args.pruned:
        options = {"mode": "pruned", "n_candidates": args.candidates, "nprobe": args.nprobe,
                   "n_refine": args.refine}
    if args.rerank:
        options["rerank"] = args.rerank
    options.update(channel_options(args))
    if args.group != "segments":
        moments = engine.moments(request, k=args.k, group=args.group, margin=args.margin, thumbnails=False,
                                 videos=args.video or None, time_range=time_range, **options)
        print_moments(engine, moments, args.json)
        if args.explain:
            write_explanations(engine, [m.best for m in moments], args.explain)
        return 0
    # neither output prints the JPEG bytes: do not read them
    result = engine.query(request, k=args.k, videos=args.video or None, time_range=time_range,
                          thumbnails=False, **options)
    hits = result.hits
    ms = (time.perf_counter() - t0) * 1000
    if args.explain:
        write_explanations(engine, hits, args.explain)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=1))
        return 0
    if not hits:
        print(f"no hits ({plural(len(engine), 'segment')} searched)")
        return 0
    width = max(len(h.video) for h in hits)
    for i, h in enumerate(hits, 1):
        span = f"{h.start:8.2f}-{h.end:<8.2f}"
        reranked = "rerank" in h.scores and "maxsim" in h.scores  # the first-stage score beside it
        first = f"  (maxsim {fmt_num(h.scores['maxsim'])})" if reranked else ""
        print(f"{i:3d}  {fmt_num(h.score):>8}  {h.video:<{width}}  {span}  best {h.best_time:.2f}  "
              f"id {h.segment_id}{first}")
        if h.transcript is not None:  # the line that was said there, with its time
            t = h.transcript
            print(f"{'':15}{t.start:8.2f}-{t.end:<8.2f} \"{t.text}\"")
    where = "" if result.stats.backend == "cpu" else f" on {result.stats.device} ({result.stats.backend})"
    print(f"({plural(len(engine), 'segment')} searched in {ms:.1f} ms{where})")
    return 0
