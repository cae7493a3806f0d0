"""Ingest routes: start a background job over files under the server's ingest root, follow its progress."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam

from maxsim.server import schemas as S
from maxsim.server.jobs import PathRefused, check_ingest_paths
from maxsim.server.state import ServerState


def router(state: ServerState, api: APIRouter, root: Path | None) -> None:
    """Add the ingest and job routes to ``api`` (ingest answers 403 unless ``root`` is given)."""

    @api.post(
        "/ingest",
        status_code=202,
        response_model=S.JobAccepted,
        responses={403: {"model": S.ErrorOut}},
        summary="Start a background job ingesting files or folders under the server's ingest root",
    )
    async def ingest(req: S.IngestRequest, request: Request) -> S.JobAccepted:
        if state.jobs is None or root is None:
            raise HTTPException(403, "ingest is disabled on this server: start it with --ingest-root DIR")
        try:
            files = await asyncio.to_thread(check_ingest_paths, req.paths, root)
        except PathRefused as e:
            raise HTTPException(403, str(e)) from e
        if not files:
            raise HTTPException(400, f"no video files found in {req.paths}")
        job = state.jobs.submit(files)
        prefix = request.scope.get("root_path", "")
        return S.JobAccepted(id=job.id, status_url=f"{prefix}/jobs/{job.id}", files=len(files))

    @api.get("/jobs", response_model=S.JobList, summary="Recent ingest jobs")
    def list_jobs() -> S.JobList:
        jobs = state.jobs.all() if state.jobs is not None else []
        return S.JobList(jobs=[S.JobOut(**j.to_dict()) for j in jobs])

    @api.get(
        "/jobs/{job_id}",
        response_model=S.JobOut,
        responses={404: {"model": S.ErrorOut}},
        summary="An ingest job's progress and report",
    )
    def get_job(job_id: Annotated[str, PathParam(max_length=64)]) -> S.JobOut:
        job = state.jobs.get(job_id) if state.jobs is not None else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return S.JobOut(**job.to_dict())
