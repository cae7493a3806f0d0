"""``maxsim verify`` and ``maxsim repair``: check every byte of an index against its checksums, and repair
what can be repaired (a missing or damaged manifest.json, parts that are missing or damaged)."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm

from maxsim.cli.common import fmt_bytes
from maxsim.index.repair import apply_repair, plan_repair, verify_index
from maxsim.index.store import Store
from maxsim.search.prune.files import PruneSidecar
from maxsim.specs import plural


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every part is sound, 1 when one is missing or damaged."""
    with tqdm(desc="verify", unit="B", unit_scale=True, disable=args.quiet or args.json) as bar:
        report = verify_index(args.index, args.version, progress=bar.update)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0 if report.ok else 1
    for p in report.parts:
        what = {"ok": "ok", "unchecked": "no checksums (written by an older maxsim): structure read only",
                "missing": "MISSING", "damaged": "DAMAGED"}[p.status]
        print(f"part {p.part}: {what} ({fmt_bytes(p.bytes)})")
        for problem in p.problems:
            print(f"  {problem}")
        if p.videos:
            print(f"  {plural(len(p.videos), 'video')} with segments there: {', '.join(p.videos[:10])}"
                  f"{' ...' if len(p.videos) > 10 else ''}")
    bad, total = len(report.bad), sum(p.bytes for p in report.parts)
    print(f"verified {plural(len(report.parts), 'part')} ({fmt_bytes(total)}) of version {report.version}: "
          f"{len(report.parts) - bad - report.unchecked} ok, {bad} missing or damaged, "
          f"{report.unchecked} without checksums")
    if report.unchecked:
        print(f"hint: `maxsim compact {args.index} --full` rewrites every part with checksums")
    if bad:
        print(f"hint: `maxsim repair {args.index}` shows how it would remove them and their videos",
              file=sys.stderr)
    return 0 if report.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    """Show the plan (exit 1 when something needs repairing); with --yes carry it out (exit 0)."""
    plan = plan_repair(args.index)
    if not args.json:
        for problem in plan.problems:
            print(f"problem: {problem}")
        for line in plan.actions():
            print(("would " if not args.yes and not line.startswith(" ") else "") + line)
    if plan.unrepairable is not None:
        if args.json:
            print(json.dumps(plan.to_dict(), indent=1))
        print(f"error: {plan.unrepairable}", file=sys.stderr)
        return 2
    if plan.nothing_to_do:
        if args.json:
            print(json.dumps({**plan.to_dict(), "applied": False}, indent=1))
        else:
            print(f"nothing to repair: {args.index} opens and every part matches its checksums "
                  "(or has none)")
        return 0
    if not args.yes:
        if args.json:
            print(json.dumps({**plan.to_dict(), "applied": False}, indent=1))
        else:
            print("nothing was changed: run again with --yes to apply")
        return 1
    store = Store(args.index, sidecars=(PruneSidecar(),))
    with store.writing(wait=args.lock_timeout):
        done = apply_repair(store, plan)
    version = None if done is None else done.version
    if args.json:
        print(json.dumps({**plan.to_dict(), "applied": True, "version": version}, indent=1))
    else:
        print(f"repaired: {args.index} is at version {version}")
    return 0
