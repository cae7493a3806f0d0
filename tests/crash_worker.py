"""The writer process of the crash tests: runs one index operation, and dies where it is told to.

Started through a multiprocessing forkserver that has already imported the engine, so that each of the
many short-lived writers starts in milliseconds.
"""

from __future__ import annotations

import os

import maxsim.index.parts as parts_mod
from maxsim.engine import Engine
from tests.color_encoder import ColorEncoder


def run(index: str, op: str, args: list[str], crash_at: str | None, batch_bytes: int) -> None:
    """Do ``op`` on the index; ``crash_at``: a failpoint name[:n] where the process SIGKILLs itself."""
    if crash_at:
        os.environ["MAXSIM_CRASH_AT"] = crash_at
    else:
        os.environ.pop("MAXSIM_CRASH_AT", None)
    parts_mod.BATCH_BYTES = batch_bytes  # several record batches per part: flushes happen mid-ingest
    eng = Engine(index, encoder=ColorEncoder(), segmenter="fixed:2")
    if op == "ingest":
        eng.ingest(args, progress=False)
    elif op == "ingest_each":  # one commit per video
        eng.ingest(args, progress=False, commit_every=1)
    elif op == "delete":
        eng.delete_where(videos=args)
    elif op == "compact":
        eng.compact(full=True, keep_versions=2)
    else:
        raise ValueError(op)
