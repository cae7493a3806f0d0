"""The HTTP service and search page (``pip install -e ".[serve]"`` from a maxsim checkout): ``create_app``
and ``maxsim serve``.

``create_app`` is imported on first use, so that the parts of this package that need no web framework
(the load test's client, :func:`~maxsim.server.state.is_loopback`) import without FastAPI installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from maxsim.server.app import create_app  # FastAPI: the optional serve extra

        return create_app
    raise AttributeError(f"module 'maxsim.server' has no attribute {name!r}")
