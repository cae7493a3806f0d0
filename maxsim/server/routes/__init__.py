"""The HTTP routes, one module per noun: search, media (thumbnails, video files), videos (the catalog and
deletes), ingest (jobs), health (liveness and the page). Each builds an ``APIRouter`` over a
:class:`~maxsim.server.state.ServerState`."""
