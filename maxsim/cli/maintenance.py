"""``maxsim delete``, ``compact`` and ``prune``: remove videos, reclaim space, build the prune index."""

from __future__ import annotations

import argparse
import json
import sys
import time

from maxsim.cli.common import fmt_bytes, open_engine
from maxsim.specs import plural
from maxsim.types import video_key


def cmd_delete(args: argparse.Namespace) -> int:
    if not args.videos and args.prefix is None:
        print("error: give videos to delete or --prefix", file=sys.stderr)
        return 2
    engine = open_engine(args, create=False)
    removed = engine.delete_where(prefix=args.prefix, videos=args.videos or None)
    if args.json:
        print(json.dumps({"deleted": removed, "version": engine.version}, indent=1))
    else:
        for v, n in sorted(removed.items()):
            print(f"deleted {v} ({plural(n, 'segment')})")
        print(f"deleted {plural(len(removed), 'video')}; index version {engine.version}")
    wanted = {video_key(v) for v in args.videos}
    missing = sorted(wanted - set(removed))
    for v in missing:
        print(f"not in the index: {v}", file=sys.stderr)
    return 1 if missing or not removed else 0


def cmd_compact(args: argparse.Namespace) -> int:
    engine = open_engine(args, create=False)
    rep = engine.compact(full=args.full, keep_versions=args.keep_versions,
                         target_part_bytes=int(args.target_part_mb * (1 << 20)), progress=not args.quiet)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1))
    elif rep.version is None:
        print(f"nothing to compact ({plural(rep.parts_before, 'part')}); removed "
              f"{plural(rep.files_removed, 'unused file')}")
    else:
        print(
            f"compacted {rep.parts_rewritten} of {plural(rep.parts_before, 'part')} into "
            f"{plural(rep.parts_after, 'part')}, dropped {plural(rep.segments_dropped, 'deleted segment')} "
            f"({fmt_bytes(rep.bytes_before)} -> {fmt_bytes(rep.bytes_after)} of vectors); "
            f"version {rep.version}; removed {plural(rep.files_removed, 'unused file')}"
        )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    if args.bits not in (0, 1, 2, 4, 8):
        print(f"maxsim prune: --bits must be 0, 1, 2, 4 or 8, got {args.bits}", file=sys.stderr)
        return 2
    engine = open_engine(args, create=False)
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
        print(f"prune index: built {plural(len(built), 'part')} in {secs:.1f} s; "
              f"{len(engine.manifest.parts) - len(built)} already had one")
    return 0
