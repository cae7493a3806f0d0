"""``POST /search``: one text or a batch of texts, exact or pruned, optionally re-ranked, with what the
search read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, HTTPException, Request

from maxsim.errors import RerankError
from maxsim.integrations.hits import hit_metadata
from maxsim.search import SearchOptions, SearchResult, sum_prune_stats
from maxsim.search.moments import assemble
from maxsim.search.options import CHANNEL_KEYS, PRUNED_KEYS
from maxsim.server import schemas as S
from maxsim.server.batcher import Overloaded
from maxsim.server.catalog import video_id
from maxsim.server.state import ServerState
from maxsim.types import Hit, Moment


def _apply(names: list[str]) -> str:
    return "applies" if len(names) == 1 else "apply"


def hit_out(h: Hit, prefix: str, thumbnails: bool, text: str) -> S.HitOut:
    """A hit as the API returns it: the fields every front end shares, its video id and media URLs."""
    md = hit_metadata(h, thumbnail=thumbnails, link=False)
    vid = video_id(md["video"])
    return S.HitOut(
        **md,
        video_id=vid,
        thumbnail_url=f"{prefix}/segments/{h.segment_id}/thumbnail" if h.thumbnail else None,
        video_url=f"{prefix}/videos/{vid}#t={h.start:.3f},{h.end:.3f}",
        explain_url=f"{prefix}/segments/{h.segment_id}/explain?q={quote(text, safe='')}",
    )


def moment_out(m: Moment, prefix: str, thumbnails: bool, text: str) -> S.MomentOut:
    """A moment as the API returns it: its span, score and segments (as hits)."""
    vid = video_id(str(m.video))
    return S.MomentOut(
        video_id=vid, video=str(m.video), video_name=Path(m.video).name, start=m.start, end=m.end,
        score=m.score, best_time=m.best_time,
        segments=[hit_out(h, prefix, thumbnails, text) for h in m.segments],
        video_url=f"{prefix}/videos/{vid}#t={m.start:.3f},{m.end:.3f}",
    )


async def search_moments(state: ServerState, texts: list[str], options: SearchOptions, group: str,
                         margin: float) -> tuple[list[SearchResult], list[list[Moment]]]:
    """The moments of each text: segment hits searched wider than k (from ``4 k + 16``, doubling while a
    text has fewer than k moments and more segments are left), assembled as :func:`assemble` does."""
    k, total = options.k, max(len(state.engine), 1)
    n = min(4 * k + 16, total)
    while True:
        results = await state.batcher.search(texts, options.replace(k=n))
        moments = [assemble(r.hits, k, margin=margin, group=group) for r in results]
        short = any(len(m) < k and len(r.hits) >= n for m, r in zip(moments, results, strict=True))
        if not short or n >= total:
            return results, moments
        n = min(2 * n, total)


def router(state: ServerState, api: APIRouter, max_k: int, defaults: dict[str, Any], default_mode: str,
           default_rerank: int = 0) -> None:
    """Add the search route to ``api``; ``defaults``/``default_mode``/``default_rerank``: the server's
    search options (pruning knobs, mode, hits re-ranked)."""

    def resolve_options(req: S.SearchRequest | S.BatchSearchRequest) -> tuple[str, dict[str, Any]]:
        """The mode a request runs in and its other options: the request's, else the server's."""
        given = {key: getattr(req, key) for key in PRUNED_KEYS if getattr(req, key) is not None}
        rerank: dict[str, Any] = {"rerank": default_rerank if req.rerank is None else req.rerank}
        rerank.update({key: getattr(req, key) for key in CHANNEL_KEYS if getattr(req, key) is not None})
        mode = req.mode or default_mode
        if mode == "exact":
            if given and req.mode == "exact":
                raise HTTPException(
                    400, f"{', '.join(given)} only {_apply(list(given))} to mode 'pruned', not 'exact'")
            if given:
                raise HTTPException(
                    400,
                    f"{', '.join(given)} only {_apply(list(given))} to pruned search, and this server "
                    'searches exactly by default: add "mode": "pruned"',
                )
            return mode, rerank
        return mode, {**defaults, **given, **rerank}

    @api.post(
        "/search",
        response_model=S.SearchResponse | S.BatchSearchResponse,
        response_model_exclude_none=False,
        responses={
            404: {"model": S.ErrorOut, "description": "a video in `videos` is not in the index"},
            409: {"model": S.ErrorOut, "description": "re-ranking needs a video file that is gone"},
            503: {
                "model": S.ErrorOut,
                "description": "too many searches are waiting: retry after the `Retry-After` seconds",
            },
        },
        summary="Search the index with text (one query, or a batch with `texts`)",
    )
    async def search(
        req: Annotated[
            S.AnySearchRequest,
            Body(title="Search", description="`text` for one query, or `texts` for a batch"),
        ],
        request: Request,
    ) -> S.SearchResponse | S.BatchSearchResponse:
        if req.k > max_k:
            raise HTTPException(400, f"k={req.k} is more than this server's limit of {max_k}")
        if req.time_range is not None and req.time_range[1] < req.time_range[0]:
            raise HTTPException(
                400, f"time_range end {req.time_range[1]} is before its start {req.time_range[0]}"
            )
        single = isinstance(req, S.SearchRequest)
        texts = [req.text] if single else list(req.texts)
        videos = None
        if req.videos is not None:  # the catalog may need building for a new version: not on the loop
            entries = await asyncio.to_thread(lambda: [(r, state.catalog.resolve(r)) for r in req.videos])
            for ref, entry in entries:
                if entry is None:
                    raise HTTPException(
                        404,
                        f"unknown video {ref!r}: give an id from GET /videos or an indexed path",
                    )
            videos = [entry.path for _, entry in entries]
        mode, knobs = resolve_options(req)
        try:
            options = SearchOptions(k=req.k, videos=videos, time_range=req.time_range, mode=mode, **knobs)
        except (TypeError, ValueError) as e:
            raise HTTPException(400, str(e)) from e
        t0 = time.perf_counter()
        moments: list[list[Moment]] | None = None
        try:
            if req.group == "segments":
                results = await state.batcher.search(texts, options)
            else:
                results, moments = await search_moments(state, texts, options, req.group, req.margin)
        except Overloaded as e:
            raise HTTPException(503, str(e), {"Retry-After": str(e.retry_after_s)}) from e
        except RerankError as e:  # a video file that is gone (409), or no reranker to be had (400)
            raise HTTPException(409 if e.video else 400, str(e)) from e
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        took = (time.perf_counter() - t0) * 1000
        prefix = request.scope.get("root_path", "")
        thumbs = req.include_thumbnails
        pairs = list(zip(texts, results, strict=True))
        if moments is None:
            out = [[hit_out(h, prefix, thumbs, t) for h in r.hits] for t, r in pairs]
            m_out = None
        else:  # hits: each moment's best segment, in moment order
            per = list(zip(texts, moments, strict=True))
            out = [[hit_out(m.best, prefix, thumbs, t) for m in ms] for t, ms in per]
            m_out = [[moment_out(m, prefix, thumbs, t) for m in ms] for t, ms in per]
        prune_stats = None
        if req.include_prune_stats and mode == "pruned":
            stats = sum_prune_stats(results)
            prune_stats = None if stats is None else S.PruneStatsOut(**stats.to_dict())
        if single:
            return S.SearchResponse(hits=out[0], moments=None if m_out is None else m_out[0], took_ms=took,
                                    mode=mode, prune_stats=prune_stats)
        return S.BatchSearchResponse(results=out, moments=m_out, took_ms=took, mode=mode,
                                     prune_stats=prune_stats)
