"""The HTTP service and search page (``pip install -e ".[serve]"`` from a maxsim checkout): ``create_app``
and ``maxsim serve``."""

from maxsim.server.app import create_app

__all__ = ["create_app"]
