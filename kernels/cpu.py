"""The "cpu" MaxSim backend: the compiled fused kernel (kernels/csrc/maxsim_cpu.c) behind a torch wrapper.

Paths, chosen at run time from the CPU's features: AMX tiles (int8 / bf16 segments on Sapphire Rapids and
later), an AVX-512 float32 register-blocked kernel (any storage dtype; rows widened in registers), or
portable C (cloned by the compiler for AVX2 and baseline x86-64, and the only path on other CPUs).
``MAXSIM_CPU_ISA=generic`` disables AMX and ``MAXSIM_CPU_NO_AVX512=1`` the AVX-512 kernel.

Per storage dtype of the segments:

- int8: queries are quantised on the fly to int8 with one scale per token (see
  :func:`~maxsim.kernels.quantize.quantize_queries_int8`); products run on AMX int8 (TDPBSSD) where the
  CPU has it, else the float kernels on the same int8 values (exact integer products in float32, so every
  path gives the same scores up to summation order). The query rounding costs up to ~4e-4 per query token
  on unit-norm vectors (~1e-3 of a 32-token score).
- bf16: queries are rounded to bf16 (~1e-4 per query token); products run on AMX bf16 (TDPBF16PS), else
  the float kernels; float32 accumulation either way.
- fp8 (e4m3): widened to bf16 (exactly) in the kernel, one block of rows at a time, then as bf16; the
  widening costs a few vector ops per 32 values, so on a CPU int8 storage is faster and more accurate.
- fp16 and float32: the generic blocked kernel with float32 queries (fp16 rows are widened exactly in the
  kernel; exact up to summation order).

Top-k runs inside the kernel (a sorted list per thread and query, merged here), so the
``(n_queries, n_segments)`` score matrix is never materialised. Without the compiled extension (no compiler
at install time, a non-x86 wheel), the backend runs the plain torch path of kernels/reference.py instead;
:func:`path` tells which one runs.
"""

from __future__ import annotations

import os

import torch
from maxsim.kernels import reference
from maxsim.kernels.quantize import quantize_queries_int8
from maxsim.kernels.validate import FP8, Problem, new_output

try:
    from maxsim.kernels import _maxsim_cpu as _ext
except ImportError:  # built without a C compiler: the torch path below stands in
    _ext = None

_SCALE = {None: 0, "token": 1, "segment": 2}
# Rows of segments converted (fp16, fp8) or handed to the kernel per call.
CHUNK_ROWS = 1 << 21
# Below this many multiply-adds a call runs on one thread (thread start-up would dominate).
_MIN_PARALLEL_MACS = 1 << 22


def available() -> bool:
    """Whether the compiled kernel is installed."""
    return _ext is not None


def amx() -> bool:
    """Whether the AMX int8/bf16 paths are usable on this CPU (and the extension is installed)."""
    return _ext is not None and bool(_ext.isa()["amx"])


def path(dtype: torch.dtype) -> str:
    """Which implementation scores segments of ``dtype`` here: "amx", "avx512", "generic" or "torch"."""
    if _ext is None:
        return "torch"
    if dtype in (torch.int8, torch.bfloat16, FP8) and _isa_for(dtype) == 1:
        return "amx"
    if _ext.isa()["avx512"] and os.environ.get("MAXSIM_CPU_NO_AVX512", "0") in ("", "0"):
        return "avx512"
    return "generic"


def _isa_for(dtype: torch.dtype) -> int:
    if os.environ.get("MAXSIM_CPU_ISA", "auto").lower() == "generic":
        return 0
    return 1 if dtype in (torch.int8, torch.bfloat16, FP8) and amx() else 0


def _threads(macs: int) -> int:
    n = torch.get_num_threads()
    return 1 if macs < _MIN_PARALLEL_MACS else max(1, n)


def _chunks(p: Problem):
    """Segment ranges [i, j) of at most CHUNK_ROWS rows (a single over-long segment stays whole)."""
    o = p.d_offsets
    n = p.n_d
    i = 0
    while i < n:
        j = int(torch.searchsorted(o, o[i] + CHUNK_ROWS, right=True)) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _prepare_queries(p: Problem, kind: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if kind == 2:
        return quantize_queries_int8(p.q)
    # bf16 queries for bf16 / fp8 segments, float32 for fp32 / fp16
    return p.q.to(torch.bfloat16 if kind in (1, 4) else torch.float32).contiguous(), None


def _run_chunk(p: Problem, i: int, j: int, qk, qscale, kind: int, isa: int, k: int, out: torch.Tensor | None):
    """Score segments i..j-1 into out[:, i:j] (k == 0) or return their per-thread top-k lists."""
    lo, hi = int(p.d_offsets[i]), int(p.d_offsets[j])
    d = p.d[lo:hi].contiguous()
    d_off = (p.d_offsets[i : j + 1] - lo).contiguous()
    scale = None
    if p.scale_per == "token":
        scale = p.d_scale[lo:hi].contiguous()
    elif p.scale_per == "segment":
        scale = p.d_scale[i:j].contiguous()
    n_d, n_q = j - i, p.n_q
    nth = _threads(qk.shape[0] * d.shape[0] * p.dim)
    q_off = p.q_offsets
    ptr = (lambda t: 0 if t is None else t.data_ptr())  # noqa: E731
    if k:
        top_s = new_output((nth, n_q, k), torch.float32, "cpu")
        top_i = new_output((nth, n_q, k), torch.int64, "cpu")
        tile = torch.empty((n_q, 0), dtype=torch.float32)
    else:
        tile = new_output((n_q, n_d), torch.float32, "cpu")
        top_s = top_i = None
    qkind = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}[qk.dtype]
    _ext.run(
        kind, qkind, p.dim, qk.data_ptr(), ptr(qscale), qk.shape[0], q_off.data_ptr(), n_q,
        d.data_ptr(), d_off.data_ptr(), n_d, d.shape[0], ptr(scale), _SCALE[p.scale_per],
        ptr(tile), k, ptr(top_s), ptr(top_i), nth, isa,
    )  # fmt: skip
    if not k:
        out[:, i:j] = tile
        return None
    top_i = torch.where(top_i >= 0, top_i + i, top_i)
    return top_s.permute(1, 0, 2).reshape(n_q, -1), top_i.permute(1, 0, 2).reshape(n_q, -1)


def _kind(dtype: torch.dtype) -> int:
    if dtype == torch.float16:
        return 3
    if dtype == torch.float32:
        return 0
    if dtype == FP8:
        return 4
    if dtype == torch.bfloat16:
        return 1
    return 2


def scores(p: Problem, isa: int | None = None) -> torch.Tensor:
    """MaxSim scores ``(n_queries, n_docs)`` of a validated problem on CPU tensors."""
    if _ext is None:
        return reference.scores(p)
    kind = _kind(p.d.dtype)
    isa = _isa_for(p.d.dtype) if isa is None else isa
    qk, qscale = _prepare_queries(p, kind)
    out = new_output((p.n_q, p.n_d), torch.float32, "cpu")
    for i, j in _chunks(p):
        _run_chunk(p, i, j, qk, qscale, kind, isa, 0, out)
    return out


def topk(p: Problem, k: int, isa: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query (best first, ties by lower index, -inf / -1 tail)."""
    if _ext is None:
        return reference.topk(p, k)
    empty_s = torch.full((p.n_q, k), float("-inf"), dtype=torch.float32)
    empty_i = torch.full((p.n_q, k), -1, dtype=torch.int64)
    if k == 0 or p.n_q == 0 or p.n_d == 0:
        return empty_s, empty_i
    if k >= p.n_d:  # every segment is kept: score them all and sort once
        s = scores(p, isa)
        return reference.merge_topk(s, torch.arange(p.n_d).expand(p.n_q, -1), k)
    kind = _kind(p.d.dtype)
    isa = _isa_for(p.d.dtype) if isa is None else isa
    qk, qscale = _prepare_queries(p, kind)
    best_s, best_i = empty_s, empty_i
    for i, j in _chunks(p):
        s, idx = _run_chunk(p, i, j, qk, qscale, kind, isa, k, None)
        best_s, best_i = reference.merge_topk(torch.cat([best_s, s], 1), torch.cat([best_i, idx], 1), k)
    return best_s, best_i
