"""The HTTP service and search page (``pip install "maxsim[serve]"``): ``create_app`` and ``maxsim serve``."""

from maxsim.server.app import create_app

__all__ = ["create_app"]
