"""A LlamaIndex retriever over a maxsim index (``pip install -e ".[llamaindex]"`` from a maxsim checkout).

    from maxsim.integrations.llamaindex import MaxSimRetriever

    retriever = MaxSimRetriever.from_index("my.index", k=5)
    nodes = retriever.retrieve("a dog catches a frisbee")
    nodes = await retriever.aretrieve("a dog catches a frisbee")

    # by picture (QueryBundle's image_path), by any maxsim.Query, or "more like this" moment
    nodes = retriever.retrieve(QueryBundle("", image_path="frame.jpg"))
    nodes = retriever.retrieve_query(Query("at night", clip=("/data/park.mp4", 12, 20)))
    nodes = retriever.more_like(nodes[0])  # that moment left out

    # pruned search (after engine.build_prune_index() / `maxsim prune`)
    retriever = MaxSimRetriever.from_index("my.index", search_options={"mode": "pruned", "nprobe": 16})

Each :class:`~llama_index.core.schema.NodeWithScore` stands for one moment: its score is the MaxSim score
and its :class:`~llama_index.core.schema.TextNode` (``id_`` ``"maxsim:<segment_id>"``) has a one-line text
(file name, start-end, best frame time) and ``metadata`` with ``video`` (absolute path), ``video_name``,
``start``, ``end``, ``best_time`` (seconds), ``score``, ``segment_id``, ``deep_link``
(``file:///...#t=start,end``) and, when the index stored one and ``include_thumbnail`` is on, ``thumbnail``
as a ``data:image/jpeg;base64,...`` URI. The thumbnail, deep link and ids are excluded from the text
LlamaIndex shows an LLM or an embedding model (``excluded_llm_metadata_keys``), so a synthesizer
sees the video name and times, not kilobytes of base64.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'maxsim.integrations.llamaindex needs llama-index-core: pip install -e ".[llamaindex]" in the '
        "maxsim checkout"
    ) from e

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

_HIDDEN_FROM_MODELS = ["thumbnail", "deep_link", "segment_id", "segment_ids", "video", "evidence", "grid"]


class MaxSimRetriever(BaseRetriever):
    """Retrieves video moments from a maxsim :class:`~maxsim.Engine` as LlamaIndex nodes.

    ``k`` moments per query; ``videos`` (paths) and ``time_range`` (``(start, end)`` seconds) restrict
    the search; ``search_options`` (``mode``, ``n_candidates``, ``n_refine``, ``nprobe``, ``rerank`` of
    :meth:`maxsim.Engine.search`, e.g. ``{"mode": "pruned"}`` or ``{"rerank": 50}``) choose how it is
    searched, and unknown keys or values out of range are refused here with a ValueError. They are plain
    attributes: change them between calls (search_options are checked again on each call), or make a
    retriever per setting. ``group="moments"`` (or ``"video"``) returns moments of merged segments
    (:meth:`maxsim.Engine.moments`) instead of segments. Metadata carries each hit's ``evidence`` (hidden
    from the LLM and the embedder, like the thumbnail).
    ``aretrieve`` runs the search in a worker thread so the event loop is not blocked. A
    :class:`~llama_index.core.schema.QueryBundle` with an ``image_path`` searches with that picture (and its
    ``query_str`` when not empty); :meth:`retrieve_query` takes any :class:`maxsim.Query` and
    :meth:`more_like` retrieves the moments like a retrieved one.
    """

    def __init__(
        self,
        engine: Any,
        k: int = 4,
        videos: Sequence[str] | str | None = None,
        time_range: tuple[float, float] | None = None,
        include_thumbnail: bool = True,
        search_options: dict[str, Any] | None = None,
        group: str = "segments",
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.engine = engine
        self.k = check_k(k)
        self.videos = [videos] if isinstance(videos, str) else (None if videos is None else list(videos))
        if time_range is not None:
            time_range = (float(time_range[0]), float(time_range[1]))
        self.time_range = time_range
        self.include_thumbnail = include_thumbnail
        self.search_options = check_search_options(search_options)
        self.group = check_group(group)

    @classmethod
    def from_index(cls, path: str | os.PathLike, encoder: Any = None, **kwargs: Any) -> MaxSimRetriever:
        """Open the index at ``path`` (it must exist) and wrap it; ``kwargs`` go to the constructor."""
        return cls(Engine(path, encoder=encoder, create=False), **kwargs)

    def _node(self, hit: Hit | Moment) -> NodeWithScore:
        moment = isinstance(hit, Moment)
        node = TextNode(
            id_=f"maxsim:{hit.best.segment_id if isinstance(hit, Moment) else hit.segment_id}",
            text=moment_text(hit) if isinstance(hit, Moment) else hit_text(hit),
            metadata=(moment_metadata if moment else hit_metadata)(hit, thumbnail=self.include_thumbnail),
            excluded_llm_metadata_keys=list(_HIDDEN_FROM_MODELS),
            excluded_embed_metadata_keys=list(_HIDDEN_FROM_MODELS),
        )
        return NodeWithScore(node=node, score=float(hit.score))

    def retrieve_query(self, query: Query) -> list[NodeWithScore]:
        """The moments of a :class:`maxsim.Query` (an image, a clip, a segment, with or without text)."""
        if not isinstance(query, Query):
            raise TypeError(f"retrieve_query takes a maxsim.Query, got {type(query).__name__}")
        return self._search(query)

    async def aretrieve_query(self, query: Query) -> list[NodeWithScore]:
        """:meth:`retrieve_query` for async code (in a worker thread)."""
        return await asyncio.to_thread(self.retrieve_query, query)

    def more_like(self, moment: Any) -> list[NodeWithScore]:
        """The moments most like ``moment`` (a retrieved node, its id ``"maxsim:<id>"`` or a segment id),
        that one left out."""
        return self._search(Query(like=segment_id_of(moment)))

    def _search(self, query_bundle: QueryBundle | Query) -> list[NodeWithScore]:
        options = check_search_options(self.search_options)
        query = query_bundle
        if isinstance(query_bundle, QueryBundle):
            image = query_bundle.image_path
            text = query_bundle.query_str or None
            query = Query(text, image=image) if image else query_bundle.query_str
        serialize_encoder(self.engine)  # aretrieve calls run on worker threads: one encode at a time
        hits = retrieve(self.engine, query, check_k(self.k), self.group, self.include_thumbnail,
                        videos=self.videos, time_range=self.time_range, **options)
        return [self._node(h) for h in hits]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._search, query_bundle)
