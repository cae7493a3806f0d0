"""Late-interaction (MaxSim) scoring over ragged multi-vectors.

``score(q, s) = sum_i max_j <q_i, s_j>`` for every query ``q`` and segment ``s``. Both sides are ragged:
a flat ``(total_tokens, dim)`` matrix plus CSR offsets ``(n + 1,)`` whose consecutive pairs bound each
item's rows. Nothing is padded; a segment with no token scores ``-inf``, and a query with no token scores 0
(an empty sum).

Backends (``backend=``): ``"triton"`` (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1``), ``"cpu"``
(the compiled fused CPU kernel, see :mod:`maxsim.kernels.cpu`), ``"torch"`` (plain torch, exact, any
device). By default CUDA tensors run Triton and CPU tensors run the CPU kernel.

Segments may be stored as float32, float16, bfloat16, int8 or float8_e4m3fn. ``d_scale`` (float32) holds
their dequantisation scales, either one per token row (shape ``(total_tokens,)``) or one per segment
(shape ``(n_segments, 1)``); the score uses ``d * d_scale``. :func:`quantize` produces both.
"""

from __future__ import annotations

import os

import torch
from maxsim.kernels import cpu as _cpu
from maxsim.kernels import reference as _reference
from maxsim.kernels.quantize import quantize
from maxsim.kernels.reference import merge_topk
from maxsim.kernels.validate import Problem, check, check_k

__all__ = ["BACKENDS", "maxsim_scores", "maxsim_topk", "merge_topk", "quantize", "resolve_backend"]

BACKENDS = ("triton", "cpu", "torch")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """The backend that runs tensors on ``device`` when ``backend`` (None means the default) is asked for."""
    if backend is None:
        if device.type == "cuda":
            return "triton" if _triton_available() else "torch"
        return "cpu" if device.type == "cpu" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None, got {backend!r}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got tensors on {device}")
    if backend == "triton" and device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before triton "
            f"is imported), got tensors on {device}"
        )
    return backend


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton():
    from maxsim.kernels import triton_maxsim

    return triton_maxsim


def _scores(p: Problem, backend: str) -> torch.Tensor:
    if backend == "triton":
        return _triton().scores(p)
    if backend == "cpu":
        return _cpu.scores(p)
    return _reference.scores(p)


def maxsim_scores(
    q: torch.Tensor,
    q_offsets: torch.Tensor,
    d: torch.Tensor,
    d_offsets: torch.Tensor,
    *,
    backend: str | None = None,
    d_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim score of every query against every segment: float32 ``(n_queries, n_docs)``."""
    p = check(q, q_offsets, d, d_offsets, d_scale)
    return _scores(p, resolve_backend(backend, p.d.device))


def maxsim_topk(
    q: torch.Tensor,
    q_offsets: torch.Tensor,
    d: torch.Tensor,
    d_offsets: torch.Tensor,
    k: int,
    *,
    backend: str | None = None,
    d_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query: ``(scores[n_queries, k] float32, indices[n_queries, k] int64)``.

    Best first; ties keep the lower segment index first. Where fewer than k segments exist the tail is
    filled with score ``-inf`` and index ``-1``. The Triton and CPU backends select inside the scoring pass
    (no ``(n_queries, n_docs)`` matrix) and the Triton path does not synchronise with the host after launch.
    """
    k = check_k(k)
    p = check(q, q_offsets, d, d_offsets, d_scale)
    backend = resolve_backend(backend, p.d.device)
    if backend == "triton":
        return _triton().topk(p, k)
    if backend == "cpu":
        return _cpu.topk(p, k)
    return _reference.topk(p, k)
