"""``POST /search``: one text or a batch of texts, exact or pruned, optionally re-ranked, with what the
search read; or one query with an image (base64 in the JSON body, or uploaded as multipart/form-data to
``POST /search/image``), a clip of an indexed video or segments like a hit (:mod:`maxsim.query`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import ValidationError

from maxsim.errors import QueryError, RerankError, UnknownSegmentError, VideoError
from maxsim.integrations.hits import hit_metadata
from maxsim.query import Query
from maxsim.search import SearchOptions, SearchResult, sum_prune_stats
from maxsim.search.moments import assemble
from maxsim.search.options import CHANNEL_KEYS, PRUNED_KEYS
from maxsim.server import schemas as S
from maxsim.server.batcher import Overloaded
from maxsim.server.catalog import video_id
from maxsim.server.state import ServerState
from maxsim.server.uploads import decode_image, image_form, read_image_form
from maxsim.types import Hit, Moment


def _apply(names: list[str]) -> str:
    return "applies" if len(names) == 1 else "apply"


def explain_url(prefix: str, segment_id: int, text: str | None, like: int | None = None) -> str | None:
    """The URL of a hit's explanation for a query of ``text`` and/or segments ``like`` (None for neither:
    a query with an image or a clip cannot be put in a URL)."""
    args = ([f"q={quote(text, safe='')}"] if text else []) + ([f"like={like}"] if like is not None else [])
    return f"{prefix}/segments/{segment_id}/explain?{'&'.join(args)}" if args else None


def hit_out(h: Hit, prefix: str, thumbnails: bool, text: str | None, like: int | None = None) -> S.HitOut:
    """A hit as the API returns it: the fields every front end shares, its video id and media URLs
    (``text``, ``like``: the query, for the explanation's URL)."""
    md = hit_metadata(h, thumbnail=thumbnails, link=False)
    vid = video_id(md["video"])
    return S.HitOut(
        **md,
        video_id=vid,
        thumbnail_url=f"{prefix}/segments/{h.segment_id}/thumbnail" if h.thumbnail else None,
        video_url=f"{prefix}/videos/{vid}#t={h.start:.3f},{h.end:.3f}",
        explain_url=explain_url(prefix, h.segment_id, text, like),
    )


def moment_out(m: Moment, prefix: str, thumbnails: bool, text: str | None, like: int | None = None
               ) -> S.MomentOut:
    """A moment as the API returns it: its span, score and segments (as hits)."""
    vid = video_id(str(m.video))
    return S.MomentOut(
        video_id=vid, video=str(m.video), video_name=Path(m.video).name, start=m.start, end=m.end,
        score=m.score, best_time=m.best_time,
        segments=[hit_out(h, prefix, thumbnails, text, like) for h in m.segments],
        video_url=f"{prefix}/videos/{vid}#t={m.start:.3f},{m.end:.3f}",
    )


async def search_moments(search: Callable[[SearchOptions], Awaitable[list[SearchResult]]], segments: int,
                         options: SearchOptions, group: str, margin: float
                         ) -> tuple[list[SearchResult], list[list[Moment]]]:
    """The moments of each query: segment hits searched (``search(options)``) wider than k (from
    ``4 k + 16``, doubling while a query has fewer than k moments and more of the index's ``segments`` are
    left), assembled as :func:`assemble` does."""
    k, total = options.k, max(segments, 1)
    n = min(4 * k + 16, total)
    while True:
        results = await search(options.replace(k=n))
        moments = [assemble(r.hits, k, margin=margin, group=group) for r in results]
        short = any(len(m) < k and len(r.hits) >= n for m, r in zip(moments, results, strict=True))
        if not short or n >= total:
            return results, moments
        n = min(2 * n, total)


def router(state: ServerState, api: APIRouter, max_k: int, defaults: dict[str, Any], default_mode: str,
           default_rerank: int = 0, max_image_bytes: int = 10 << 20) -> None:
    """Add the search routes to ``api``; ``defaults``/``default_mode``/``default_rerank``: the server's
    search options (pruning knobs, mode, hits re-ranked); ``max_image_bytes``: the largest image taken."""

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

    async def resolve_video(ref: str) -> str:
        """An indexed video's path from its id or path (404 otherwise); the catalog may need building for a
        new version: not on the loop."""
        entry = await asyncio.to_thread(state.catalog.resolve, ref)
        if entry is None:
            raise HTTPException(404, f"unknown video {ref!r}: give an id from GET /videos or an indexed path")
        return entry.path

    async def prepare(req: S.SearchRequest | S.BatchSearchRequest) -> tuple[str, SearchOptions]:
        """The mode and checked options of a request (400 / 404 naming what is wrong)."""
        if req.k > max_k:
            raise HTTPException(400, f"k={req.k} is more than this server's limit of {max_k}")
        if req.time_range is not None and req.time_range[1] < req.time_range[0]:
            raise HTTPException(
                400, f"time_range end {req.time_range[1]} is before its start {req.time_range[0]}"
            )
        videos = None if req.videos is None else [await resolve_video(r) for r in req.videos]
        mode, knobs = resolve_options(req)
        try:
            return mode, SearchOptions(k=req.k, videos=videos, time_range=req.time_range, mode=mode, **knobs)
        except (TypeError, ValueError) as e:
            raise HTTPException(400, str(e)) from e

    async def one_query(req: S.SearchRequest, image: bytes | None) -> Query:
        """The :class:`~maxsim.query.Query` of a request with an image, clip or like (checked: 400)."""
        clip = None
        if req.clip is not None:
            clip = (await resolve_video(req.clip.video), req.clip.start, req.clip.end)
        try:
            return Query(req.text, image=image, clip=clip, like=req.like, include_self=req.include_self)
        except (TypeError, ValueError) as e:
            raise HTTPException(400, str(e)) from e

    async def run(req: S.SearchRequest | S.BatchSearchRequest, image: bytes | None, request: Request
                  ) -> S.SearchResponse | S.BatchSearchResponse:
        single = isinstance(req, S.SearchRequest)
        if single and req.text is None and image is None and req.clip is None and req.like is None:
            raise HTTPException(400, "nothing to search for: give text, image, clip or like")
        mode, options = await prepare(req)
        visual = single and (image is not None or req.clip is not None or req.like is not None)
        if visual and req.rerank is None:  # the server's default re-ranking is for text queries
            options = options.replace(rerank=0)
        query = await one_query(req, image) if visual else None
        texts = [req.text or ""] if single else list(req.texts)
        # the explanations' query: text and like; none for an image or a clip (no URL can carry them)
        explained = [None if image is not None or (single and req.clip is not None) else t or None
                     for t in texts]
        like = req.like if single else None
        t0 = time.perf_counter()
        moments: list[list[Moment]] | None = None
        try:
            if query is not None:
                async def run_query(opts: SearchOptions) -> list[SearchResult]:
                    loop = asyncio.get_running_loop()
                    return [await loop.run_in_executor(state.executor, state.query, query, opts)]
            else:
                async def run_query(opts: SearchOptions) -> list[SearchResult]:
                    return await state.batcher.search(texts, opts)
            if req.group == "segments":
                results = await run_query(options)
            else:
                results, moments = await search_moments(run_query, len(state.engine), options, req.group,
                                                        req.margin)
        except Overloaded as e:
            raise HTTPException(503, str(e), {"Retry-After": str(e.retry_after_s)}) from e
        except RerankError as e:  # a video file that is gone (409), or no reranker to be had (400)
            raise HTTPException(409 if e.video else 400, str(e)) from e
        except UnknownSegmentError as e:
            raise HTTPException(404, str(e)) from e
        except VideoError as e:  # a clip's video that can no longer be decoded
            raise HTTPException(409, str(e)) from e
        except (QueryError, ValueError) as e:
            raise HTTPException(400, str(e)) from e
        took = (time.perf_counter() - t0) * 1000
        prefix = request.scope.get("root_path", "")
        thumbs = req.include_thumbnails
        pairs = list(zip(explained, results, strict=True))
        if moments is None:
            out = [[hit_out(h, prefix, thumbs, t, like) for h in r.hits] for t, r in pairs]
            m_out = None
        else:  # hits: each moment's best segment, in moment order
            per = list(zip(explained, moments, strict=True))
            out = [[hit_out(m.best, prefix, thumbs, t, like) for m in ms] for t, ms in per]
            m_out = [[moment_out(m, prefix, thumbs, t, like) for m in ms] for t, ms in per]
        prune_stats = None
        if req.include_prune_stats and mode == "pruned":
            stats = sum_prune_stats(results)
            prune_stats = None if stats is None else S.PruneStatsOut(**stats.to_dict())
        if single:
            return S.SearchResponse(hits=out[0], moments=None if m_out is None else m_out[0], took_ms=took,
                                    mode=mode, prune_stats=prune_stats)
        return S.BatchSearchResponse(results=out, moments=m_out, took_ms=took, mode=mode,
                                     prune_stats=prune_stats)

    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": S.ErrorOut,
              "description": "a video in `videos` or `clip`, or the `like` segment, is not in the index"},
        409: {"model": S.ErrorOut, "description": "re-ranking (or a clip) needs a video file that is gone"},
        413: {"model": S.ErrorOut, "description": "the image (or the body) is larger than this server takes"},
        503: {
            "model": S.ErrorOut,
            "description": "too many searches are waiting: retry after the `Retry-After` seconds",
        },
    }

    @api.post(
        "/search",
        response_model=S.SearchResponse | S.BatchSearchResponse,
        response_model_exclude_none=False,
        responses=errors,
        summary="Search the index with text (one query, or a batch with `texts`), an image, a clip or a "
        "segment",
    )
    async def search(
        req: Annotated[
            S.AnySearchRequest,
            Body(title="Search",
                 description="`text` for one query, or `texts` for a batch; `image` (base64), `clip` or "
                 "`like` for a query by picture, video span or segment, alone or with `text`"),
        ],
        request: Request,
    ) -> S.SearchResponse | S.BatchSearchResponse:
        image = None
        if isinstance(req, S.SearchRequest) and req.image is not None:
            image = decode_image(req.image, max_image_bytes)
        return await run(req, image, request)

    @api.post(
        "/search/image",
        response_model=S.SearchResponse,
        responses={**errors,
                   415: {"model": S.ErrorOut, "description": "neither multipart/form-data nor JSON"},
                   422: {"model": S.ErrorOut, "description": "a field that is unknown or out of its range"}},
        summary="Search with an image up to the server's image size: uploaded (multipart/form-data) or "
        "base64 in the JSON body of POST /search (one query)",
        openapi_extra=image_form(),
    )
    async def search_image(request: Request) -> S.SearchResponse:
        ctype, body = request.headers.get("content-type", ""), await request.body()
        try:
            if ctype.lower().startswith("application/json"):
                req = S.SearchRequest.model_validate_json(body)
                image = None if req.image is None else decode_image(req.image, max_image_bytes)
            else:
                fields, image = read_image_form(ctype, body, max_image_bytes)
                req = S.SearchRequest(**fields)
        except ValidationError as e:
            raise HTTPException(422, "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}"
                                               for x in e.errors())) from None
        out = await run(req, image, request)
        assert isinstance(out, S.SearchResponse)
        return out
