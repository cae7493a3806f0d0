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

import importlib.machinery
import importlib.util
import os
import sys

if __name__ == "kernels":
    # This folder is the source of maxsim.kernels. Where a checkout's root is on sys.path (python run from
    # it, python -m pytest) it is also found as a top-level "kernels", shadowing Hugging Face's package of
    # that name, which transformers looks for and imports. Hand the import over to that package where it is
    # installed; otherwise stand in as importlib's view of a bare folder (a namespace package with neither
    # file nor version), which transformers reads as "not installed" instead of failing its own import.
    _root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _path = [p for p in sys.path if os.path.realpath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _path)
    if _spec is None or _spec.loader is None:
        _spec = importlib.machinery.ModuleSpec("kernels", None, is_package=True)
    _hub = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _hub  # what `import kernels` returns once this file has run
    if _spec.loader is not None:
        _spec.loader.exec_module(_hub)
    else:
        _hub.__doc__ = ("Not installed: Hugging Face's kernels package is absent (the kernels/ folder of a "
                        "maxsim checkout is maxsim.kernels).")

import torch
from maxsim.kernels import cpu as _cpu
from maxsim.kernels import reference as _reference
from maxsim.kernels.backends import BACKENDS, resolve_backend, triton_available
from maxsim.kernels.prepared import Docs, Queries, prepare_docs
from maxsim.kernels.quantize import quantize
from maxsim.kernels.reference import merge_topk
from maxsim.kernels.validate import Problem, check, check_k, check_mask

__all__ = [
    "BACKENDS", "Docs", "Queries", "maxsim_scores", "maxsim_topk", "merge_topk", "prepare_docs", "quantize",
    "resolve_backend", "triton_available",
]


def _triton():
    from maxsim.kernels import triton_maxsim

    return triton_maxsim


def _scores(p: Problem, backend: str, mask: torch.Tensor | None) -> torch.Tensor:
    if backend == "triton":
        tm = _triton()
        plan = tm.plan_queries(p.q, p.q_offsets, p.d.dtype)
        return tm.scores_planned(plan, p.d, p.d_offsets.to(p.d.device), p.n_d, p.d_scale, p.scale_per, mask)
    if backend == "cpu":
        out = _cpu.scores(p)
        return out if mask is None else out.masked_fill_(~mask.bool()[None, :], float("-inf"))
    return _reference.scores(p, mask)


def maxsim_scores(
    q: torch.Tensor,
    q_offsets: torch.Tensor,
    d: torch.Tensor,
    d_offsets: torch.Tensor,
    *,
    backend: str | None = None,
    d_scale: torch.Tensor | None = None,
    d_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaxSim score of every query against every segment: float32 ``(n_queries, n_docs)``. Segments whose
    ``d_mask`` entry is 0 (bool or int8 per segment, on ``d``'s device) score ``-inf`` unscored."""
    p = check(q, q_offsets, d, d_offsets, d_scale)
    return _scores(p, resolve_backend(backend, p.d.device), check_mask(d_mask, p.n_d, p.d.device))


def maxsim_topk(
    q: torch.Tensor,
    q_offsets: torch.Tensor,
    d: torch.Tensor,
    d_offsets: torch.Tensor,
    k: int,
    *,
    backend: str | None = None,
    d_scale: torch.Tensor | None = None,
    d_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query: ``(scores[n_queries, k] float32, indices[n_queries, k] int64)``.

    Best first; ties keep the lower segment index first. Where fewer than k segments exist the tail is
    filled with score ``-inf`` and index ``-1``. The Triton and CPU backends select inside the scoring pass
    (no ``(n_queries, n_docs)`` matrix) and the Triton path does not synchronise with the host after launch.
    Segments whose ``d_mask`` entry is 0 never appear (Triton skips them in the pass).
    """
    k = check_k(k)
    p = check(q, q_offsets, d, d_offsets, d_scale)
    queries = Queries(p.q, p.q_offsets, resolve_backend(backend, p.d.device))
    return queries.topk(Docs(p.d, p.d_offsets, p.d_offsets.to(p.d.device), p.d_scale, p.scale_per), k, d_mask)
