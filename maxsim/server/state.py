"""What the routes of one server share: the engine, its catalog, the search batcher, the ingest jobs."""

from __future__ import annotations

import ipaddress
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from maxsim.engine import Engine
from maxsim.ingest import IngestReport
from maxsim.media.progress import ProgressCallback
from maxsim.query import Query
from maxsim.search import SearchOptions, SearchResult
from maxsim.search.prune.files import read_prune_manifest
from maxsim.server.batcher import SearchBatcher
from maxsim.server.catalog import Catalog
from maxsim.server.jobs import IngestJobs
from maxsim.server.locking import VersionGuard, serialize_encoder


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerState:
    """Everything the routes share: the engine, its catalog, the batcher, the ingest jobs.

    Threads: searches run one batch at a time on ``executor``; ingest jobs on their own thread; deletes on
    worker threads. Which version the engine has open changes only under ``guard`` (forward only), and
    encoder calls run one at a time (see :mod:`maxsim.server.locking`).
    """

    def __init__(
        self,
        engine: Any,
        refresh_interval_s: float,
        batch_window_ms: float,
        max_batch: int,
        max_queue: int = 256,
    ) -> None:
        self.engine = engine
        self.catalog = Catalog(engine)
        self.guard = VersionGuard(engine)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maxsim-search")
        self.batcher = SearchBatcher(
            self._search, self.executor, max_texts=max_batch, window_ms=batch_window_ms, max_queue=max_queue
        )
        self.refresh_interval_s = refresh_interval_s
        self._checked = time.monotonic()
        self.jobs: IngestJobs | None = None
        self.delete_wait_s = 2.0  # a delete waits this long for a refresh or an ingest file to finish

    def serial_encoder(self) -> None:
        """Make the engine's encoder calls run one at a time (loads the encoder if not yet)."""
        serialize_encoder(self.engine)

    def maybe_refresh(self) -> None:
        """Follow commits made by other processes (checked at most every refresh_interval_s). Never waits:
        while this server's own ingest or delete is changing the version, the open version is searched."""
        now = time.monotonic()
        if now - self._checked < self.refresh_interval_s:
            return
        self._checked = now
        try:
            self.guard.refresh(wait=False)
        except Exception:  # a half-written index must not take searches down; keep the open version
            pass

    def _search(self, texts: list[str], options: SearchOptions) -> list[SearchResult]:
        self.serial_encoder()
        self.maybe_refresh()
        return self.engine.query_batch(texts, options)

    def query(self, request: Query, options: SearchOptions) -> SearchResult:
        """One query with an image, clip or segment (not batched: its tokens are not text), on the search
        thread like the batches."""
        self.serial_encoder()
        self.maybe_refresh()
        return self.engine.query(request, options)

    def has_prune_index(self) -> bool:
        """Whether the index has a prune index (a damaged prune manifest counts as none)."""
        path = getattr(self.engine, "path", None)
        if path is None:
            return False
        try:
            man = read_prune_manifest(path)
        except Exception:
            return False
        return bool(man and man.get("parts"))

    def ingest_file(self, path: str, on_progress: ProgressCallback | None = None) -> IngestReport:
        """Ingest one file (the ingest-job thread): one commit, opened by the engine under the guard;
        ``on_progress`` follows its decoding and encoding (see :class:`~maxsim.media.VideoProgress`)."""
        self.serial_encoder()
        with self.guard.changing():
            return self.engine.ingest([path], progress=False, on_progress=on_progress)

    def delete(self, path: str) -> int:
        """Delete a video's segments (a worker thread); :class:`~maxsim.server.locking.Busy` when an ingest
        job of this server is writing (after waiting ``delete_wait_s`` for it, long enough for a refresh
        to finish)."""
        with self.guard.changing(timeout=self.delete_wait_s):
            return self.engine.delete(path)

    def close(self) -> None:
        """Stop the ingest jobs and the search executor (the app's shutdown)."""
        if self.jobs is not None:
            self.jobs.shutdown()
        self.executor.shutdown(wait=False, cancel_futures=True)


def open_engine(engine_or_path: Any, encoder: Any, reranker: Any = None) -> Any:
    """The engine to serve: an :class:`~maxsim.Engine` given as it is, or the index at a path opened (with
    ``encoder`` and ``reranker``, which an Engine given brings itself)."""
    if isinstance(engine_or_path, (str, os.PathLike)):
        return Engine(engine_or_path, encoder=encoder, create=False, reranker=reranker)
    for name, value in (("encoder", encoder), ("reranker", reranker)):
        if value is not None:
            raise ValueError(f"{name}= is only used when create_app() is given an index path, not an Engine")
    return engine_or_path
