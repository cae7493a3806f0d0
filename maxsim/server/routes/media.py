"""Media routes: segment thumbnails and the indexed video files (byte ranges, so players can seek).
Only files live in the index are ever read, looked up by id: no path from a request reaches the disk."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from maxsim.errors import UnknownSegmentError, VideoError
from maxsim.query import Query as MaxsimQuery
from maxsim.search import SearchOptions
from maxsim.server import schemas as S
from maxsim.server.batcher import Overloaded
from maxsim.server.catalog import media_type
from maxsim.server.state import ServerState

VIDEO_ID = r"^[0-9a-f]{16}$"


def router(state: ServerState, media: APIRouter) -> None:
    """Add the media routes to ``media`` (whose dependencies take the API key as a query parameter too)."""

    @media.get(
        "/segments/{segment_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}, 404: {"model": S.ErrorOut}},
        summary="The JPEG thumbnail of a segment",
    )
    def thumbnail(segment_id: Annotated[int, PathParam(ge=0, le=2**62)]) -> Response:
        state.maybe_refresh()
        try:
            jpeg = state.catalog.thumbnail(segment_id)
        except KeyError:
            raise HTTPException(404, f"no segment {segment_id} in the index") from None
        if not jpeg:
            raise HTTPException(404, f"segment {segment_id} has no thumbnail")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400, immutable"})

    @media.get(
        "/segments/{segment_id}/explain",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "PNG"},
            400: {"model": S.ErrorOut, "description": "neither q nor like given"},
            404: {"model": S.ErrorOut},
            409: {"model": S.ErrorOut, "description": "the video file is gone or cannot be decoded"},
            503: {"model": S.ErrorOut, "description": "too many searches are waiting"},
        },
        summary="Why a segment matched a query: its best frame with a heatmap of the matched regions (PNG)",
    )
    async def explain(
        segment_id: Annotated[int, PathParam(ge=0, le=2**62)],
        q: Annotated[str | None, Query(min_length=1, max_length=S.MAX_TEXT_CHARS,
                                       description="the query text")] = None,
        like: Annotated[int | None, Query(ge=0, le=2**53, description="or with it: a segment whose tokens "
                                          "are the query (more like this)")] = None,
    ) -> Response:
        if q is None and like is None:
            raise HTTPException(400, "give the query: q (text) and/or like (a segment id)")
        state.maybe_refresh()
        try:
            video, start, end = await asyncio.to_thread(state.catalog.segment, segment_id)
        except KeyError:
            raise HTTPException(404, f"no segment {segment_id} in the index") from None
        # the segment scored again with its evidence: a search over its own span of its video
        options = SearchOptions(k=64, videos=[video], time_range=(start, end), thumbnails=False)
        try:
            if like is None:
                (result,) = await state.batcher.search([q], options)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    state.executor, state.query, MaxsimQuery(q, like=like, include_self=True), options)
        except Overloaded as e:
            raise HTTPException(503, str(e), {"Retry-After": str(e.retry_after_s)}) from e
        except UnknownSegmentError as e:
            raise HTTPException(404, str(e)) from e
        hit = next((h for h in result.hits if h.segment_id == segment_id), None)
        if hit is None:
            raise HTTPException(404, f"segment {segment_id} is no longer in the index")
        try:
            png = await asyncio.to_thread(state.engine.explain, hit)
        except (VideoError, ValueError) as e:
            raise HTTPException(409, str(e)) from e
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @media.get(
        "/videos/{video_id}",
        response_class=FileResponse,
        responses={
            200: {"content": {"video/*": {}}, "description": "the whole file"},
            206: {"content": {"video/*": {}}, "description": "the byte range asked for with Range"},
            404: {"model": S.ErrorOut},
            416: {"description": "range not satisfiable"},
        },
        summary="Stream an indexed video (byte ranges supported, so players can seek)",
    )
    def stream_video(vid: Annotated[str, PathParam(alias="video_id", pattern=VIDEO_ID)]) -> FileResponse:
        state.maybe_refresh()
        entry = state.catalog.get(vid)
        if entry is None:
            raise HTTPException(404, f"no video {vid!r} in the index")
        if not os.path.isfile(entry.path):
            raise HTTPException(404, f"video {vid!r} is indexed but its file {entry.path} is gone")
        return FileResponse(
            entry.path,
            media_type=media_type(entry.path),
            content_disposition_type="inline",
            # a header holds text: a name whose bytes are not UTF-8 is shown with U+FFFD where they are
            filename=os.fsencode(entry.name).decode("utf-8", "replace"),
        )
