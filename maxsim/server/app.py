"""The HTTP service: search, thumbnails, video streaming, ingest jobs and the search page.

``create_app(engine_or_path, ...)`` builds a FastAPI application around one :class:`~maxsim.Engine`;
``maxsim serve INDEX`` runs it with uvicorn. The model is loaded once, when the app is created, and
concurrent searches are grouped into batched engine calls by a :class:`~maxsim.server.batcher.SearchBatcher`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from maxsim.integrations.hits import hit_metadata
from maxsim.rerank import RerankError
from maxsim.search_options import PRUNED_KEYS, check_search_options
from maxsim.server import schemas as S
from maxsim.server.batcher import Overloaded, SearchBatcher
from maxsim.server.catalog import Catalog, media_type, video_id
from maxsim.server.jobs import IngestJobs, PathRefused, check_ingest_paths
from maxsim.server.limits import BodySizeLimit
from maxsim.server.locking import Busy, VersionGuard, serialize_encoder
from maxsim.store import LockedError
from maxsim.types import Hit

if TYPE_CHECKING:
    from maxsim.engine import IngestReport

STATIC = Path(__file__).parent / "static"
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine's loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
VIDEO_ID = r"^[0-9a-f]{16}$"

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
BEARER = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")
KEY_QUERY = APIKeyQuery(
    name="api_key", auto_error=False, description="the API key, for <video>/<img> sources"
)

_ERRORS = {
    400: {
        "model": S.ErrorOut,
        "description": "a value the schema cannot express is wrong: k above this server's max_k, "
        "a time_range whose end is before its start, pruning options (n_candidates, n_refine, nprobe) "
        "for an exact search, `rerank` asked of a server whose reranker cannot be loaded",
    },
    401: {"model": S.ErrorOut, "description": "missing or wrong API key"},
    413: {"model": S.ErrorOut, "description": "request body too large"},
}


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
            self._search,
            self.executor,
            max_texts=max_batch,
            window_ms=batch_window_ms,
            max_queue=max_queue,
            last_stats=self._prune_stats,
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

    def _search(
        self, texts: list[str], k: int, videos: list[str] | None, time_range, **options: Any
    ) -> list[list[Hit]]:
        self.serial_encoder()
        self.maybe_refresh()
        return self.engine.search_batch(texts, k=k, videos=videos, time_range=time_range, **options)

    def _prune_stats(self) -> dict[str, Any] | None:
        """What the engine's last pruned search read (called on the search thread right after it)."""
        stats = getattr(self.engine, "last_prune_stats", None)
        return None if stats is None else stats.to_dict()

    def has_prune_index(self) -> bool:
        """Whether the index has a prune index (a damaged prune manifest counts as none)."""
        from maxsim.candidates import read_prune_manifest

        path = getattr(self.engine, "path", None)
        if path is None:
            return False
        try:
            man = read_prune_manifest(path)
        except Exception:
            return False
        return bool(man and man.get("parts"))

    def ingest_file(self, path: str) -> IngestReport:
        """Ingest one file (the ingest-job thread): one commit, opened by the engine under the guard."""
        self.serial_encoder()
        with self.guard.changing():
            return self.engine.ingest([path], progress=False)

    def delete(self, path: str) -> int:
        """Delete a video's segments (a worker thread); :class:`Busy` when an ingest job of this server
        is writing (after waiting ``delete_wait_s`` for it, long enough for a refresh to finish)."""
        with self.guard.changing(timeout=self.delete_wait_s):
            return self.engine.delete(path)


def _open_engine(engine_or_path: Any, encoder: Any) -> Any:
    if isinstance(engine_or_path, (str, os.PathLike)):
        from maxsim.engine import Engine

        return Engine(engine_or_path, encoder=encoder, create=False)
    if encoder is not None:
        raise ValueError("encoder= is only used when create_app() is given an index path, not an Engine")
    return engine_or_path


def create_app(
    engine_or_path: Any,
    api_key: str | None = None,
    *,
    encoder: Any = None,
    ingest_root: str | os.PathLike | None = None,
    max_body_bytes: int = 1 << 20,
    max_k: int = 100,
    max_batch: int = 64,
    max_queue: int = 256,
    batch_window_ms: float = 2.0,
    refresh_interval_s: float = 2.0,
    cors_origins: list[str] | None = None,
    warm: bool = True,
    search_options: dict[str, Any] | None = None,
) -> FastAPI:
    """A FastAPI app serving the index at ``engine_or_path`` (a path, or an open :class:`~maxsim.Engine`).

    ``api_key``: when set, every route except ``/``, the page's static files and ``/healthz`` needs it in
    an ``X-API-Key`` header (or ``Authorization: Bearer``); the media routes (thumbnails, videos) also take
    ``?api_key=`` because a ``<video>`` element cannot send headers. ``ingest_root``: POST /ingest is
    refused unless given, and then only reads files under it. ``max_body_bytes``: larger request bodies
    get 413. ``max_k``, ``max_batch``: bounds of k and of texts per request (and per engine call).
    ``max_queue``: searches waiting for the engine beyond which new ones get 503 with ``Retry-After``.
    ``batch_window_ms``: how long the batcher waits for company after a search arrives. ``warm``: load the
    encoder now rather than on the first search. ``cors_origins``: web origins (``https://app.example``)
    whose pages may call the API from a browser; none by default (the search page is same-origin).
    ``search_options``: what a search request that does not set them gets, e.g. ``{"mode": "pruned",
    "n_candidates": 2000}`` (keys of :func:`maxsim.search_options.check_search_options`); exact search by
    default. A request's own ``mode`` wins; its pruning knobs override these one by one.
    """
    defaults = check_search_options(search_options, "create_app(search_options=)")
    default_mode = defaults.pop("mode", "exact")
    default_rerank = defaults.pop("rerank", 0)
    engine = _open_engine(engine_or_path, encoder)
    if not 1 <= max_k <= S.MAX_K:
        raise ValueError(f"max_k must be in 1..{S.MAX_K}, got {max_k}")
    if not 1 <= max_batch <= S.MAX_BATCH:
        raise ValueError(f"max_batch must be in 1..{S.MAX_BATCH}, got {max_batch}")
    root = None
    if ingest_root is not None:
        root = Path(ingest_root).resolve()
        if not root.is_dir():
            raise ValueError(f"ingest root {ingest_root} is not a folder")
    state = ServerState(engine, refresh_interval_s, batch_window_ms, max_batch, max_queue)
    if warm:
        state.serial_encoder()  # the model is loaded once, here; errors surface at startup
        if default_rerank:
            _ = engine.reranker  # so is the reranker when searches re-rank by default
    if root is not None:
        state.jobs = IngestJobs(state.ingest_file)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await state.batcher.close()
        if state.jobs is not None:
            state.jobs.shutdown()
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="maxsim",
        summary="Find moments in video: text search over a MaxSim index.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.maxsim = state
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "Range"],
            expose_headers=["Content-Range", "Accept-Ranges", "Content-Length"],
        )

    # -- auth ----------------------------------------------------------------------------------------
    def _check(supplied: str | None) -> None:
        if api_key is None:
            return
        if supplied is None or not hmac.compare_digest(supplied.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send it in an X-API-Key header",
                {"WWW-Authenticate": "Bearer"},
            )

    def require_key(
        header: Annotated[str | None, Depends(KEY_HEADER)],
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        _check(header or (token.credentials if token else None))

    def require_key_media(
        header: Annotated[str | None, Depends(KEY_HEADER)],
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        query: Annotated[str | None, Depends(KEY_QUERY)],
    ) -> None:
        _check(header or (token.credentials if token else None) or query)

    api = APIRouter(dependencies=[Depends(require_key)] if api_key else [], responses=_ERRORS)
    media = APIRouter(dependencies=[Depends(require_key_media)] if api_key else [], responses=_ERRORS)

    # -- search --------------------------------------------------------------------------------------
    def hit_out(h: Hit, prefix: str, thumbnails: bool) -> S.HitOut:
        md = hit_metadata(h, thumbnail=thumbnails, link=False)  # the fields every front end shares
        vid = video_id(md["video"])
        return S.HitOut(
            **md,
            video_id=vid,
            thumbnail_url=f"{prefix}/segments/{h.segment_id}/thumbnail" if h.thumbnail else None,
            video_url=f"{prefix}/videos/{vid}#t={h.start:.3f},{h.end:.3f}",
        )

    def resolve_options(req: S.SearchRequest | S.BatchSearchRequest) -> tuple[str, dict[str, Any]]:
        """The mode a request runs in and the options for the engine: the request's, else the server's."""
        given = {key: getattr(req, key) for key in PRUNED_KEYS if getattr(req, key) is not None}
        mode = req.mode or default_mode
        rerank = default_rerank if req.rerank is None else req.rerank
        extra = {"rerank": rerank} if rerank else {}
        if mode == "exact":
            if given and req.mode == "exact":
                raise HTTPException(400, f"{', '.join(given)} only apply to mode 'pruned', not 'exact'")
            if given:
                raise HTTPException(
                    400,
                    f"{', '.join(given)} only apply to pruned search, and this server searches exactly by "
                    'default: add "mode": "pruned"',
                )
            return mode, extra
        return mode, {"mode": "pruned", **defaults, **given, **extra}

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
        mode, options = resolve_options(req)
        want_stats = req.include_prune_stats and mode == "pruned"
        t0 = time.perf_counter()
        stats = None
        try:
            if want_stats:
                results, stats = await state.batcher.search_with_stats(
                    texts, req.k, videos, req.time_range, options
                )
            else:
                results = await state.batcher.search(texts, req.k, videos, req.time_range, options)
        except Overloaded as e:
            raise HTTPException(503, str(e), {"Retry-After": str(e.retry_after_s)}) from e
        except RerankError as e:  # a video file that is gone (409), or no reranker to be had (400)
            raise HTTPException(409 if e.video else 400, str(e)) from e
        except ValueError as e:
            raise HTTPException(400, str(e)) from e
        took = (time.perf_counter() - t0) * 1000
        prefix = request.scope.get("root_path", "")
        out = [[hit_out(h, prefix, req.include_thumbnails) for h in hits] for hits in results]
        prune_stats = None if stats is None else S.PruneStatsOut(**stats)
        if single:
            return S.SearchResponse(hits=out[0], took_ms=took, mode=mode, prune_stats=prune_stats)
        return S.BatchSearchResponse(results=out, took_ms=took, mode=mode, prune_stats=prune_stats)

    # -- media ---------------------------------------------------------------------------------------
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
            filename=entry.name,
        )

    # -- catalog -------------------------------------------------------------------------------------
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

    # -- ingest --------------------------------------------------------------------------------------
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

    # -- health and page -----------------------------------------------------------------------------
    @app.get("/healthz", response_model=S.Health, summary="Liveness and what is being served")
    def healthz() -> S.Health:
        state.maybe_refresh()
        return S.Health(
            status="ok",
            version=engine.version,
            segments=len(engine),
            videos=len(state.catalog.videos()),
            encoder=str(engine.manifest.encoder.get("name", "")),
            auth_required=api_key is not None,
            ingest_enabled=state.jobs is not None,
            batching=S.Batching(**state.batcher.stats.to_dict()),
            prune_index=state.has_prune_index(),
            search_defaults=S.SearchDefaults(
                mode=default_mode, rerank=default_rerank, **{key: defaults.get(key) for key in PRUNED_KEYS}
            ),
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    allow_table: list[tuple[re.Pattern, list[str]]] = []

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # Allow: every method of this path (routes of one path may be split)
            if not allow_table:
                for template, ops in app.openapi()["paths"].items():
                    parts = re.split(r"(\{[^/}]+\})", template)
                    rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
                    allow_table.append((re.compile(f"^{rx}$"), sorted(m.upper() for m in ops)))
            path = request.scope.get("path", "")
            methods = next((m for rx, m in allow_table if rx.match(path)), None)
            if methods:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
        return await http_exception_handler(request, exc)

    app.include_router(api)
    app.include_router(media)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _version() -> str:
    try:
        from maxsim import __version__

        return __version__
    except Exception:
        return "0"
