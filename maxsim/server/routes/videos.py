"""Catalog routes: list the indexed videos, delete one."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam

from maxsim.errors import LockedError
from maxsim.server import schemas as S
from maxsim.server.locking import Busy
from maxsim.server.routes.media import VIDEO_ID
from maxsim.server.state import ServerState


def router(state: ServerState, api: APIRouter) -> None:
    """Add the catalog routes to ``api``."""
    engine = state.engine

    @api.get("/videos", response_model=S.VideoList, summary="The indexed videos and their ids")
    def list_videos() -> S.VideoList:
        state.maybe_refresh()
        return S.VideoList(videos=[S.VideoOut(**e.to_dict()) for e in state.catalog.videos()])

    @api.delete(
        "/videos/{video_id}",
        response_model=S.DeleteResponse,
        responses={404: {"model": S.ErrorOut}, 409: {"model": S.ErrorOut}},
        summary="Remove a video's segments from the index",
    )
    async def delete_video(
        vid: Annotated[str, PathParam(alias="video_id", pattern=VIDEO_ID)],
    ) -> S.DeleteResponse:
        entry = await asyncio.to_thread(state.catalog.get, vid)
        if entry is None:
            raise HTTPException(404, f"no video {vid!r} in the index")
        try:
            n = await asyncio.to_thread(state.delete, entry.path)
        except (LockedError, Busy) as e:
            raise HTTPException(
                409, f"the index is being written ({e}); retry when the ingest is done"
            ) from e
        except KeyError as e:
            raise HTTPException(404, f"no video {vid!r} in the index") from e
        return S.DeleteResponse(video_id=vid, path=entry.path, deleted_segments=n, version=engine.version)
