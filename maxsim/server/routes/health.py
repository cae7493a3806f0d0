"""Liveness and what is served (``GET /healthz``), and the search page (``GET /``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from maxsim.search.options import PRUNED_KEYS
from maxsim.server import schemas as S
from maxsim.server.state import ServerState

STATIC = Path(__file__).resolve().parent.parent / "static"


def router(state: ServerState, app: FastAPI, max_k: int, defaults: dict[str, Any], default_mode: str,
           auth_required: bool, default_rerank: int = 0) -> None:
    """Add ``/healthz`` and ``/`` to ``app`` (never behind the API key)."""
    engine = state.engine

    @app.get("/healthz", response_model=S.Health, summary="Liveness and what is being served")
    def healthz() -> S.Health:
        state.maybe_refresh()
        return S.Health(
            status="ok",
            version=engine.version,
            segments=len(engine),
            videos=len(state.catalog.videos()),
            encoder=str(engine.manifest.encoder.get("name", "")),
            auth_required=auth_required,
            ingest_enabled=state.jobs is not None,
            batching=S.Batching(**state.batcher.stats.to_dict()),
            prune_index=state.has_prune_index(),
            search_defaults=S.SearchDefaults(
                mode=default_mode, rerank=default_rerank, **{key: defaults.get(key) for key in PRUNED_KEYS}
            ),
            max_k=max_k,
            search={"backend": engine.searcher.backend, **engine.searcher.corpus.stats()},
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))
