"""``maxsim ingest``: add videos to an index, saying which encoder runs and why."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maxsim.cli.common import open_engine, reduction_args, transcript_kwargs
from maxsim.distributed.cluster import init as init_ray
from maxsim.encoders import DEFAULT_ENCODER, is_registered
from maxsim.encoders.spec import strip_pool_suffix
from maxsim.media.frames import FrameSampler
from maxsim.media.segment import Segmenter, load_segmenter

# Ingest presets: encoder and frame sampling that suit a machine. Flags given explicitly win.
PRESETS: dict[str, dict] = {
    "default": {"encoder": None, "fps": 2.0, "max_frames": 16},
    # CPU-only machines: ColQwen3 with a 256-visual-token budget per clip, 1 fps, at most 4 frames.
    "cpu": {"encoder": "colqwen3-cpu", "fps": 1.0, "max_frames": 4},
}


def sampling_changes(args: argparse.Namespace, preset: dict, new_index: bool) -> dict:
    """The frame-sampling settings this ingest asks for: the preset's (for a new index, or a preset named
    explicitly), then ``--fps``, ``--max-frames``, ``--max-side`` where given."""
    out = {}
    if new_index or args.preset != "default":
        out = {"fps": preset["fps"], "max_frames": preset["max_frames"]}
    given = {"fps": args.fps, "max_frames": args.max_frames, "max_side": args.max_side}
    return {**out, **{k: v for k, v in given.items() if v is not None}}


def segmenter_arg(args: argparse.Namespace) -> tuple[Segmenter | None, str | None]:
    """The segmenter ``--fixed``, ``--scenes[=SPEC]`` or ``--segmenter SPEC`` ask for (default
    ``fixed:10``), loaded here so a bad spec fails before the index is opened: (segmenter, problem)."""
    if args.fixed is not None:
        flag, spec = "--fixed", f"fixed:{args.fixed}"
    elif getattr(args, "scenes", None) is not None:
        flag, spec = "--scenes", str(args.scenes).strip()
        if spec.split(":", 1)[0].strip().lower() not in ("scenes", "scene"):
            spec = f"scenes:{spec}"  # --scenes content,threshold=30
    elif getattr(args, "segmenter", None) is not None:
        flag, spec = "--segmenter", str(args.segmenter)
    else:
        flag, spec = "default", "fixed:10"
    try:
        return load_segmenter(spec), None
    except (ValueError, TypeError, ImportError, AttributeError) as e:
        value = args.scenes if flag == "--scenes" else (args.segmenter if flag == "--segmenter" else spec)
        hint = ""
        if flag == "--scenes" and Path(str(value)).exists():
            hint = (" (--scenes takes an optional SPEC and read a video path as one: put --scenes after "
                    "the videos)")
        return None, f"invalid {flag} {value!r}: {e}{hint}"


def cmd_ingest(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    new_index = not (Path(args.index) / "manifest.json").exists()
    if args.encoder is not None:
        source = "given with --encoder"
    elif not new_index:
        source = "recorded in the index"
    else:
        source = f"chosen by --preset {args.preset}" if preset["encoder"] else "the default for a new index"
    if new_index:  # a new index: the preset picks the encoder
        if args.encoder is None:
            args.encoder = preset["encoder"]
        elif preset["encoder"] and not is_registered(strip_pool_suffix(args.encoder)):
            args.encoder = f"{preset['encoder']}:{args.encoder}"  # the preset's settings, that checkpoint
        if args.encoder is None and DEFAULT_ENCODER is None:
            print("error: --encoder is required to create a new index", file=sys.stderr)
            return 2
    problem = reduction_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    segmenter, problem = segmenter_arg(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    changes = sampling_changes(args, preset, new_index)
    # a new index records the recipe it is created with; an existing one samples with its own recipe,
    # changed only by the flags given (a video sampled otherwise than before is then re-encoded)
    engine = open_engine(args, create=True, sampler=FrameSampler(**changes) if new_index else None,
                         **transcript_kwargs(args))
    if not new_index and changes:
        engine.sampler = engine.sampler.replace(**changes)
    if not args.json:
        print(f"encoder {engine.encoder.name} ({source})", file=sys.stderr)
    if args.ray:
        init_ray(address=args.ray_address)
    report = engine.ingest(args.videos, segmenter=segmenter, progress=not args.quiet,
                           ray=args.ray, ray_workers=args.ray_workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report)
    return 0 if report.ok else 1
