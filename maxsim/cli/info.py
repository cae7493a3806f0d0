"""``maxsim info``: what an index holds, its versions and history."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from maxsim.cli.common import fmt_bytes
from maxsim.encoders.spec import reduction_of
from maxsim.index.store import Store
from maxsim.media.frames import FrameSampler
from maxsim.search.prune.files import prune_summary
from maxsim.specs import plural


def cmd_info(args: argparse.Namespace) -> int:
    store = Store(args.index)
    man = store.manifest(args.version)
    reduction = reduction_of(str(man.encoder.get("name", "")))
    catalog = store.catalog(man)
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
        # the frame-sampling recipe it was created with (null: before recipes were recorded)
        "sampler": man.sampler,
        "videos": len(catalog or {}),
        "segments": man.n_segments,
        "tokens": int(sum(p["n_tokens"] for p in man.parts)),
        "deleted_segments": man.n_deleted,
        "parts": len(man.parts),
        "parts_with_checksums": sum(1 for p in man.parts if p.get("checksums")),
        "bytes_on_disk": size,
        "prune_index": prune_summary(args.index, [p["id"] for p in man.parts]),
        # the transcript channel's recipe (text encoder, dim, speech recognizer) and the lines stored
        "transcript": man.transcript,
        "transcript_lines": int(sum(p.get("n_cues", 0) for p in man.parts)),
        "history": man.history,
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key in ("path", "format_version", "version", "latest_version", "versions_kept", "dim", "dtype",
                "videos", "segments", "tokens", "deleted_segments", "parts", "bytes_on_disk"):
        print(f"{key:>17}: {info[key]}")
    n_sums = info["parts_with_checksums"]
    unsummed = "" if n_sums == len(man.parts) else (
        f" ({len(man.parts) - n_sums} written by an older maxsim without; `maxsim compact --full` adds them)")
    print(f"{'checksums':>17}: {n_sums} of {plural(len(man.parts), 'part')}{unsummed}; "
          f"`maxsim verify {args.index}` reads every byte")
    print(f"{'encoder':>17}: {json.dumps(man.encoder)}")
    r = FrameSampler.from_record(man.sampler)
    size = (f"longest side {r.max_side}" if r.max_side is not None else f"within {r.frame_size.describe()}"
            if r.frame_size is not None else "sized to the encoder")
    old = "" if man.sampler is not None else " (not recorded: the default before recipes were recorded)"
    print(f"{'frame sampling':>17}: {r.fps:g} fps, at most {r.max_frames} frames, {size}{old}")
    if reduction is None:
        print(f"{'token reduction':>17}: none")
    else:
        dd = "none" if reduction["dedup"] is None else f"{reduction['dedup']:g}"
        print(f"{'token reduction':>17}: pool factor {reduction['factor']:g}, dedup {dd}, "
              f"window {reduction['window']}")
    if man.transcript is None:
        print(f"{'transcripts':>17}: none (`maxsim ingest --transcripts` indexes subtitles)")
    else:
        speech = (man.transcript.get("speech") or {}).get("name")
        print(f"{'transcripts':>17}: {info['transcript_lines']} lines stored (deleted ones included until "
              f"compaction), encoder {man.transcript['encoder'].get('name')} (dim {man.transcript['dim']})"
              + (f", speech {speech}" if speech else ""))
    pi = info["prune_index"]
    if pi is None:
        print(f"{'prune index':>17}: none (`maxsim prune {args.index}` builds it)")
    else:
        bits = ", ".join("no residual codes" if b is None else f"{b}-bit residual codes"
                         for b in pi["residual_bits"]) or "-"
        cents = "/".join(str(c) for c in pi["centroids_per_part"]) or "-"
        print(f"{'prune index':>17}: {pi['parts_covered']} of {pi['parts']} parts, {fmt_bytes(pi['bytes'])}, "
              f"{cents} centroids per part, {bits}")
    print("history:")
    for h in man.history[-args.history:] if args.history else man.history:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["time"]))
        extra = {k: v for k, v in h.items() if k not in ("version", "time", "op")}
        print(f"  v{h['version']:<5} {when}  {h['op']:<8} {json.dumps(extra) if extra else ''}")
    return 0
