"""Media routes: segment thumbnails and the indexed video files (byte ranges, so players can seek).
Only files live in the index are ever read, looked up by id: no path from a request reaches the disk."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from maxsim.server import schemas as S
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
