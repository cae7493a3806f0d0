"""Groups search requests that arrive close together into one batched engine call (requests with the same
filters and search options only); each request gets its own hits and its own search statistics back."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from maxsim.search import SearchOptions, SearchResult

# query_batch(texts, options) -> one SearchResult (hits and statistics) per text
SearchBatch = Callable[[list[str], SearchOptions], list[SearchResult]]


@dataclass
class _Pending:
    texts: list[str]
    options: SearchOptions
    future: asyncio.Future

    def group(self) -> SearchOptions:
        """Requests with equal keys share one engine call: the same filters and search options. An exact
        search's hits do not depend on k beyond the first k, so exact requests of any k share a call (at
        the largest k); a pruned search's default candidate counts follow k, so k is part of its key. A
        re-ranked search re-scores max(k, rerank) hits: requests with k up to ``rerank`` share a call,
        larger k are part of the key."""
        opts = self.options
        if opts.mode == "pruned" or opts.k > opts.rerank > 0:
            return opts
        return opts.replace(k=1)


class Overloaded(RuntimeError):
    """Too many searches are waiting for the engine; ``retry_after_s`` is a guess of when to come back."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(
            f"the server is overloaded: {waiting} searches are already waiting; retry in {retry_after_s} s"
        )
        self.waiting = waiting
        self.retry_after_s = retry_after_s


@dataclass
class BatchStats:
    """Counters of what the batcher did (read by /healthz and the load test)."""

    requests: int = 0
    texts: int = 0
    batches: int = 0  # engine calls
    largest_batch: int = 0
    busy_s: float = 0.0  # time spent inside engine calls
    rejected: int = 0  # requests turned away because the queue was full
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "texts": self.texts,
            "batches": self.batches,
            "mean_batch": (self.texts / self.batches) if self.batches else 0.0,
            "largest_batch": self.largest_batch,
            "busy_s": round(self.busy_s, 4),
            "rejected": self.rejected,
        }


class SearchBatcher:
    """Collects searches for up to ``window_ms`` after the first arrives and runs each group with the same
    options as one ``search_batch(texts, options)`` call on ``executor`` (with the group's largest k);
    each request gets back its own texts' results, cut to its own k, each with its own statistics.

    Pruned requests are grouped only with requests of the same options and the same k, so a request's hits
    never depend on which others it was batched with.

    ``max_texts`` is a hard cap on the texts of one engine call: a request that would take a batch past it
    starts the next batch, and a request with more texts than that is refused (ValueError). Requests are
    never split. While one batch runs, new requests queue up and form the next batch, so under load batches
    grow by themselves; an idle server adds at most ``window_ms`` to a request. At most ``max_queue``
    requests wait; beyond that :meth:`search` raises :class:`Overloaded` at once. Bound to the event loop it
    is first used from; used from a new loop (a new test client) it starts afresh there.
    """

    def __init__(
        self,
        search_batch: SearchBatch,
        executor: Executor,
        max_texts: int = 64,
        window_ms: float = 2.0,
        max_queue: int = 256,
    ) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._search_batch = search_batch
        self._executor = executor
        self.max_texts = max_texts
        self.window_s = max(0.0, window_ms) / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    def _ensure_started(self) -> asyncio.Queue[_Pending]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue(self.max_queue)
            self._task = loop.create_task(self._run(self._queue), name="maxsim-search-batcher")
        assert self._queue is not None
        return self._queue

    async def search(self, texts: Sequence[str], options: SearchOptions) -> list[SearchResult]:
        """The results of each of ``texts`` (hits best first, at most ``options.k``, and what its search
        did), batched with concurrent calls that have the same options."""
        if not texts:
            return []
        if len(texts) > self.max_texts:
            raise ValueError(f"{len(texts)} texts is more than this server's limit of {self.max_texts}")
        queue = self._ensure_started()
        fut = asyncio.get_running_loop().create_future()
        if options.videos is not None:  # one key for the same set of videos in any order
            options = options.replace(videos=tuple(sorted(set(options.videos))))
        try:
            queue.put_nowait(_Pending(list(texts), options, fut))
        except asyncio.QueueFull:
            with self.stats._lock:
                self.stats.rejected += 1
            raise Overloaded(queue.qsize(), self._retry_after(queue.qsize())) from None
        return await fut

    def _retry_after(self, waiting: int) -> int:
        """Seconds until about ``waiting`` requests are answered, by the mean engine call so far (>= 1)."""
        st = self.stats
        per_batch = st.busy_s / st.batches if st.batches else 0.0
        per_request = (st.texts / st.requests) if st.requests else 1.0
        batches = math.ceil(waiting * per_request / self.max_texts)
        return max(1, math.ceil(batches * per_batch))

    async def close(self) -> None:
        """Stop the batching task (pending requests are cancelled)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, RuntimeError):
                pass
        self._task = None

    async def _collect(
        self, queue: asyncio.Queue[_Pending], first: _Pending | None
    ) -> tuple[list[_Pending], _Pending | None]:
        """The next batch (at most ``max_texts`` texts), and the request that did not fit in it, if any:
        it starts the next batch."""
        if first is None:
            first = await queue.get()
        batch, n = [first], len(first.texts)
        deadline = time.monotonic() + self.window_s
        while n < self.max_texts:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    break
            if n + len(item.texts) > self.max_texts:
                return batch, item
            batch.append(item)
            n += len(item.texts)
        return batch, None

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        carry: _Pending | None = None
        while True:
            batch, carry = await self._collect(queue, carry)
            try:
                await self._answer(batch)
            except Exception as e:  # never leave a request waiting on a batch that went wrong
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)

    async def _answer(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[tuple, list[_Pending]] = {}
        for p in batch:
            if not p.future.done():  # a client that went away is not searched for
                groups.setdefault(p.group(), []).append(p)
        for items in groups.values():
            texts = [t for p in items for t in p.texts]
            options = items[0].options.replace(k=max(p.options.k for p in items))
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._search_batch, texts, options)
            except Exception as e:  # handed to each waiting request
                for p in items:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            finally:
                with self.stats._lock:
                    self.stats.busy_s += time.perf_counter() - t0
                    self.stats.batches += 1
                    self.stats.requests += len(items)
                    self.stats.texts += len(texts)
                    self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
            i = 0
            for p in items:
                mine = [SearchResult(r.hits[: p.options.k], r.stats) for r in results[i : i + len(p.texts)]]
                i += len(p.texts)
                if not p.future.done():
                    p.future.set_result(mine)
