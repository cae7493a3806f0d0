"""The HTTP service: search, thumbnails, video streaming, ingest jobs and the search page.

``create_app(engine_or_path, ...)`` builds a FastAPI application around one :class:`~maxsim.Engine`;
``maxsim serve INDEX`` runs it with uvicorn. The model is loaded once, when the app is created, and
concurrent searches are grouped into batched engine calls by a :class:`~maxsim.server.batcher.SearchBatcher`.
The routes live in :mod:`maxsim.server.routes`, one module per noun.
"""

from __future__ import annotations

import os
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from maxsim import __version__
from maxsim.search.options import check_search_options
from maxsim.server import schemas as S
from maxsim.server.auth import key_checks
from maxsim.server.jobs import IngestJobs
from maxsim.server.limits import BodySizeLimit
from maxsim.server.responses import SafeJSONResponse, http_error, validation_error
from maxsim.server.routes import health, ingest, media, search, videos
from maxsim.server.routes.health import STATIC
from maxsim.server.state import ServerState, is_loopback, open_engine

__all__ = ["create_app", "is_loopback"]

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


def create_app(
    engine_or_path: Any,
    api_key: str | None = None,
    *,
    encoder: Any = None,
    ingest_root: str | os.PathLike | None = None,
    max_body_bytes: int = 1 << 20,
    max_image_bytes: int = 10 << 20,
    max_k: int = 100,
    max_batch: int = 64,
    max_queue: int = 256,
    batch_window_ms: float = 2.0,
    refresh_interval_s: float = 2.0,
    cors_origins: list[str] | None = None,
    warm: bool = True,
    search_options: dict[str, Any] | None = None,
    reranker: Any = None,
) -> FastAPI:
    """A FastAPI app serving the index at ``engine_or_path`` (a path, or an open :class:`~maxsim.Engine`).

    ``api_key``: when set, every route except ``/``, the page's static files and ``/healthz`` needs it in
    an ``X-API-Key`` header (or ``Authorization: Bearer``); the media routes (thumbnails, videos) and the
    schema pages (``/openapi.json``, ``/docs``, ``/redoc``) also take ``?api_key=`` because a ``<video>``
    element or a browser tab cannot send headers (``/docs?api_key=KEY`` loads its schema with it).
    ``ingest_root``: POST /ingest is refused unless given, and then only reads files under it.
    ``max_body_bytes``: larger request bodies get 413, except at POST /search/image, which takes an image
    of up to ``max_image_bytes`` (base64 in JSON or uploaded) in a body as much larger (POST /search takes
    base64 images too, within ``max_body_bytes``). ``max_k``, ``max_batch``: bounds of k and of texts per
    request (and per engine call).
    ``max_queue``: searches waiting for the engine beyond which new ones get 503 with ``Retry-After``.
    ``batch_window_ms``: how long the batcher waits for company after a search arrives. ``warm``: load the
    encoder now rather than on the first search. ``cors_origins``: web origins (``https://app.example``)
    whose pages may call the API from a browser; none by default (the search page is same-origin).
    ``search_options``: what a search request that does not set them gets, e.g. ``{"mode": "pruned",
    "n_candidates": 2000}`` or ``{"rerank": 50}`` (keys of :func:`maxsim.search.check_search_options`);
    exact search without re-ranking by default. A request's own ``mode`` wins; its pruning knobs and
    ``rerank`` override these one by one. ``reranker``: the reranker spec (or object) when the app opens
    the index at a path (an Engine given brings its own); with a default ``rerank`` and ``warm`` it is
    loaded now too.
    """
    defaults = check_search_options(search_options, "create_app(search_options=)")
    default_mode = defaults.pop("mode", "exact")
    default_rerank = defaults.pop("rerank", 0)
    engine = open_engine(engine_or_path, encoder, reranker)
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
        state.close()

    keyed = {"openapi_url": None, "docs_url": None, "redoc_url": None} if api_key else {}
    app = FastAPI(
        title="maxsim",
        summary="Find moments in video: text search over a MaxSim index.",
        version=_version(),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        **keyed,
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.maxsim = state
    image_body = max_body_bytes + 4 * (max_image_bytes // 3 + 1) + 4096  # base64 and form overhead
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes, larger={"/search/image": image_body})
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "Range"],
            expose_headers=["Content-Range", "Accept-Ranges", "Content-Length"],
        )
    require_key, require_key_media = key_checks(api_key)
    api = APIRouter(dependencies=[Depends(require_key)] if api_key else [], responses=_ERRORS)
    media_api = APIRouter(dependencies=[Depends(require_key_media)] if api_key else [], responses=_ERRORS)
    search.router(state, api, max_k, defaults, default_mode, default_rerank, max_image_bytes)
    media.router(state, media_api)
    videos.router(state, api)
    ingest.router(state, api, root)
    health.router(state, app, max_k, defaults, default_mode, auth_required=api_key is not None,
                  default_rerank=default_rerank)
    if api_key:
        _schema_pages(app, require_key_media)

    allow_table: list[tuple[re.Pattern, list[str]]] = []

    @app.exception_handler(StarletteHTTPException)
    async def http_error_allow(request: Request, exc: StarletteHTTPException) -> Response:
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
        return await http_error(request, exc)

    app.include_router(api)
    app.include_router(media_api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _schema_pages(app: FastAPI, require_key: Any) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` behind the API key (header, bearer or ``?api_key=``);
    a page opened with ``?api_key=`` loads the schema with it."""
    key_dep = [Depends(require_key)]

    def schema_url(request: Request) -> str:
        key = request.query_params.get("api_key")
        url = request.scope.get("root_path", "") + "/openapi.json"
        return f"{url}?api_key={quote(key, safe='')}" if key else url

    @app.get("/openapi.json", include_in_schema=False, dependencies=key_dep)
    def openapi() -> SafeJSONResponse:
        return SafeJSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=key_dep)
    def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=schema_url(request), title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False, dependencies=key_dep)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=schema_url(request), title=f"{app.title} - ReDoc")


def _version() -> str:
    return __version__
