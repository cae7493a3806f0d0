"""A LangChain retriever over a maxsim index (``pip install -e ".[langchain]"`` from a maxsim checkout).

    from maxsim.integrations.langchain import MaxSimRetriever

    retriever = MaxSimRetriever.from_index("my.index", k=5)
    docs = retriever.invoke("a dog catches a frisbee")
    docs = await retriever.ainvoke("a dog catches a frisbee", k=3, videos=["/data/park.mp4"])

    # by picture, by a span of a video, or "more like this" moment (maxsim.Query as the input)
    docs = retriever.invoke(Query(image="frame.jpg"))
    docs = retriever.invoke(Query("at night", clip=("/data/park.mp4", 12, 20)))
    docs = retriever.more_like(docs[0])  # that moment left out

    # pruned search (after engine.build_prune_index() / `maxsim prune`), for every call or for one
    retriever = MaxSimRetriever.from_index("my.index", search_options={"mode": "pruned", "nprobe": 16})
    docs = retriever.invoke("a dog catches a frisbee", search_options={"mode": "exact"})

Each :class:`~langchain_core.documents.Document` stands for one moment: ``page_content`` is a one-line
description (file name, start-end, best frame time, score) and ``metadata`` holds ``video`` (absolute
path), ``video_name``, ``start``, ``end``, ``best_time`` (seconds), ``score``, ``segment_id``,
``deep_link`` (``file:///...#t=start,end``) and, when the index stored one and ``include_thumbnail`` is on,
``thumbnail`` as a ``data:image/jpeg;base64,...`` URI, and ``evidence`` (per query token: the winning
frame's time, its cell in the frame's token grid, its contribution to the score) and ``grid``.
``Document.id`` is ``"maxsim:<segment_id>"``. With ``group="moments"`` (or ``"video"``: the best moment
per video) each document is a moment of merged segments (:meth:`maxsim.Engine.moments`): its metadata
has ``segment_ids`` and its best segment's ``evidence``, its thumbnail is its best frame.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableConfig
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'maxsim.integrations.langchain needs langchain-core: pip install -e ".[langchain]" in the maxsim '
        "checkout"
    ) from e
from pydantic import ConfigDict, Field, field_validator

from maxsim.engine import Engine
from maxsim.integrations.hits import (
    check_group,
    check_k,
    hit_metadata,
    hit_text,
    moment_metadata,
    moment_text,
    retrieve,
    segment_id_of,
)
from maxsim.integrations.serial import serialize_encoder
from maxsim.query import Query
from maxsim.search.options import check_search_options
from maxsim.types import Hit, Moment

# Hits searched ahead for a batch: {(query, k, videos, time_range, options): hits}, seen by the batch's
# invocations.
_AHEAD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("maxsim_lc_ahead", default=None)


class MaxSimRetriever(BaseRetriever):
    """Retrieves video moments from a maxsim :class:`~maxsim.Engine` as LangChain documents.

    ``k``, ``videos`` (paths; only these videos), ``time_range`` (``(start, end)`` seconds; only
    segments overlapping it) and ``search_options`` (``mode``, ``n_candidates``, ``n_refine``, ``nprobe``,
    ``rerank`` of :meth:`maxsim.Engine.search`, e.g. ``{"mode": "pruned"}`` or ``{"rerank": 50}``) are
    defaults that each call may override:
    ``retriever.invoke(query, k=3, videos=[...], time_range=(0, 60), search_options={...})`` (a call's
    ``search_options`` replace the default ones as a whole). Unknown option keys or values out of range
    are refused when the retriever is made or the call is made, before any search. ``ainvoke`` runs the
    search in a worker thread so the event loop is not blocked. The input is a text or a
    :class:`maxsim.Query` (an image, a clip, a segment, with or without text); :meth:`more_like` retrieves
    the moments like a retrieved one.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(
        description="a maxsim.Engine (or anything with its search(text, k, videos, time_range))"
    )
    k: int = Field(default=4, ge=1, description="moments returned per query")
    videos: list[str] | None = Field(default=None, description="only search these videos (paths)")
    time_range: tuple[float, float] | None = Field(
        default=None, description="only segments overlapping (start, end) seconds"
    )
    include_thumbnail: bool = Field(default=True, description="put the thumbnail (data URI) in metadata")
    group: str = Field(default="segments", description="segments: a document per segment; moments: per "
                       "moment (adjacent segments that match alike merged); video: the best moment per video")
    search_options: dict[str, Any] | None = Field(
        default=None,
        description="options of engine.search: mode ('exact' or 'pruned'), n_candidates, n_refine, nprobe, "
        "rerank (hits re-scored by the engine's reranker)",
    )

    @field_validator("group")
    @classmethod
    def _check_group(cls, v: str) -> str:
        return check_group(v)

    @field_validator("search_options")
    @classmethod
    def _check_search_options(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else check_search_options(v)

    @classmethod
    def from_index(cls, path: str | os.PathLike, encoder: Any = None, **kwargs: Any) -> MaxSimRetriever:
        """Open the index at ``path`` (it must exist) and wrap it; ``kwargs`` are the retriever's fields."""
        return cls(engine=Engine(path, encoder=encoder, create=False), **kwargs)

    def _options(
        self,
        k: int | None,
        videos: Sequence[str] | str | None,
        time_range: tuple[float, float] | None,
        search_options: dict[str, Any] | None = None,
    ) -> tuple[int, list[str] | None, tuple[float, float] | None, dict[str, Any]]:
        k = check_k(self.k if k is None else k)
        videos = self.videos if videos is None else ([videos] if isinstance(videos, str) else list(videos))
        time_range = self.time_range if time_range is None else tuple(time_range)
        options = check_search_options(self.search_options if search_options is None else search_options)
        return k, videos, time_range, options

    @staticmethod
    def _key(query: str, k: int, videos: list[str] | None, time_range, options: dict[str, Any]) -> tuple:
        vids = None if videos is None else tuple(videos)
        return (query, k, vids, time_range, tuple(sorted(options.items())))

    def _search(
        self,
        query: str,
        k: int | None,
        videos: Sequence[str] | str | None,
        time_range: tuple[float, float] | None,
        search_options: dict[str, Any] | None = None,
    ) -> list[Document]:
        if not isinstance(query, (str, Query)):
            raise TypeError(f"query must be a string or a maxsim.Query, got {type(query).__name__}")
        k, videos, time_range, options = self._options(k, videos, time_range, search_options)
        ahead = _AHEAD.get() if isinstance(query, str) else None
        hits = None if ahead is None else ahead.get(self._key(query, k, videos, time_range, options))
        if hits is None:
            serialize_encoder(self.engine)  # ainvoke calls run on worker threads: one encode at a time
            hits = retrieve(self.engine, query, k, self.group, self.include_thumbnail, videos=videos,
                            time_range=time_range, **options)
        return [self._document(h) for h in hits]

    def _search_ahead(self, inputs: list[Any], kwargs: dict[str, Any]) -> dict | None:
        """One engine.search_batch for a whole batch; None when it cannot be done in one call (the
        per-query invocations then search, and report errors, one by one)."""
        if len(inputs) < 2 or not all(isinstance(q, str) for q in inputs) or self.group != "segments":
            return None
        if set(kwargs) - {"k", "videos", "time_range", "search_options"} or not hasattr(
            self.engine, "search_batch"
        ):
            return None
        try:
            k, videos, time_range, options = self._options(
                kwargs.get("k"), kwargs.get("videos"), kwargs.get("time_range"), kwargs.get("search_options")
            )
            texts = list(dict.fromkeys(inputs))
            serialize_encoder(self.engine)
            results = self.engine.search_batch(texts, k=k, videos=videos, time_range=time_range, **options)
        except Exception:
            return None
        return {
            self._key(q, k, videos, time_range, options): hits for q, hits in zip(texts, results, strict=True)
        }

    def batch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Document]]:
        """Retrieve for several queries: one batched pass over the index, then LangChain's usual
        per-query invocation (callbacks, tracing) on the results."""
        token = _AHEAD.set(self._search_ahead(list(inputs), kwargs))
        try:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            _AHEAD.reset(token)

    async def abatch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Document]]:
        """:meth:`batch` for async code: the batched search runs in a worker thread."""
        token = _AHEAD.set(await asyncio.to_thread(self._search_ahead, list(inputs), kwargs))
        try:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            _AHEAD.reset(token)

    def more_like(self, moment: Any, **kwargs: Any) -> list[Document]:
        """The moments most like ``moment`` (a retrieved Document, its id ``"maxsim:<id>"`` or a segment
        id), that one left out: ``invoke(Query(like=id), **kwargs)``."""
        return self.invoke(Query(like=segment_id_of(moment)), **kwargs)

    async def amore_like(self, moment: Any, **kwargs: Any) -> list[Document]:
        """:meth:`more_like` for async code."""
        return await self.ainvoke(Query(like=segment_id_of(moment)), **kwargs)

    def _document(self, hit: Hit | Moment) -> Document:
        if isinstance(hit, Moment):
            return Document(id=f"maxsim:{hit.best.segment_id}", page_content=moment_text(hit),
                            metadata=moment_metadata(hit, thumbnail=self.include_thumbnail))
        return Document(
            id=f"maxsim:{hit.segment_id}",
            page_content=hit_text(hit),
            metadata=hit_metadata(hit, thumbnail=self.include_thumbnail),
        )

    def _get_relevant_documents(
        self,
        query: str | Query,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        videos: Sequence[str] | str | None = None,
        time_range: tuple[float, float] | None = None,
        search_options: dict[str, Any] | None = None,
    ) -> list[Document]:
        return self._search(query, k, videos, time_range, search_options)

    async def _aget_relevant_documents(
        self,
        query: str | Query,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        videos: Sequence[str] | str | None = None,
        time_range: tuple[float, float] | None = None,
        search_options: dict[str, Any] | None = None,
    ) -> list[Document]:
        return await asyncio.to_thread(self._search, query, k, videos, time_range, search_options)
