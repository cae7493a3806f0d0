"""Starting or joining Ray (an optional dependency: ``pip install -e ".[ray]"`` from a maxsim checkout)."""

from __future__ import annotations

import os
from typing import Any


def ray_module() -> Any:
    """The ray module; ImportError saying how to install it when it is missing."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('Ray is not installed: pip install -e ".[ray]" in the maxsim checkout') from e
    return ray


def init(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start or join Ray once: ``address`` (or ``RAY_ADDRESS``) joins a cluster, else a local Ray starts."""
    ray = ray_module()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **kwargs}
    if address is None and num_cpus is not None:
        kw["num_cpus"] = num_cpus
    ray.init(address=address, **kw)


def gpus_per_worker() -> float:
    """GPUs per actor: one when the cluster has GPUs, else none."""
    ray = ray_module()
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
