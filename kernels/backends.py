"""Which MaxSim backend runs where: Triton on CUDA (or on CPU tensors under ``TRITON_INTERPRET=1``), the
compiled CPU kernel on CPU tensors, plain torch anywhere."""

from __future__ import annotations

import os

import torch

BACKENDS = ("triton", "cpu", "torch")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend that runs tensors on ``device`` when ``backend`` (None means the default) is asked for."""
    if backend is None:
        if device.type == "cuda":
            return "triton" if triton_available() else "torch"
        return "cpu" if device.type == "cpu" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None, got {backend!r}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got tensors on {device}")
    if backend == "triton" and device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before triton "
            f"is imported), got tensors on {device}"
        )
    return backend


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
