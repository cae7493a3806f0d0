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

Residual-coded segments (:func:`residual_scores`, the refine stage of pruned search) go through the same
float kernels, each row widened from its centroid and its packed residual bytes; :func:`bag_scores` sums,
over query tokens, the best centroid similarity in each segment's bag of centroids.

Top-k runs inside the kernel (a sorted list per thread and query, merged here), so the
``(n_queries, n_segments)`` score matrix is never materialised. Without the compiled extension (no compiler
at install time, a non-x86 wheel), the backend runs the plain torch path of kernels/reference.py instead;
:func:`path` tells which one runs.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from maxsim.kernels import reference
from maxsim.kernels.quantize import quantize_queries_int8
from maxsim.kernels.validate import FP8, Problem, check, check_offsets, new_output

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


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``arange(s, s + n)`` for every ``(s, n)`` of ``starts`` and ``lengths``, concatenated (int64)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))


def residual_scores(
    q: torch.Tensor,
    q_offsets: torch.Tensor,
    centroids: torch.Tensor,
    codes: np.ndarray | torch.Tensor,
    residuals: np.ndarray | torch.Tensor,
    table: torch.Tensor,
    starts: np.ndarray,
    lengths: np.ndarray,
    k: int = 0,
    check_codes: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """MaxSim of queries against segments stored as residual codes (:mod:`maxsim.residuals`).

    A row ``r`` of the store is ``centroids[codes[r]]`` plus, for each byte ``b`` of ``residuals[r]``,
    the ``table[b]`` components it stands for (the first ``dim`` of them). Segment ``i`` is rows
    ``starts[i] .. starts[i] + lengths[i] - 1``, read in place (no copy of the picked rows).

    ``q`` float ``(n_q_tok, dim)`` with CSR ``q_offsets``; ``centroids`` float32 ``(n_centroids, dim)``;
    ``codes`` int16/int32 ``(n_rows,)`` and ``residuals`` uint8 ``(n_rows, n_bytes)`` (numpy arrays,
    memory-mapped ones included, or tensors); ``table`` float32 ``(256, per_byte)``; ``starts``,
    ``lengths`` int64 ``(n_d,)``. Returns scores ``(n_q, n_d)`` float32, or with ``k > 0`` the top k
    ``(scores, segment indices)`` (best first, ties by lower index, -inf / -1 tail). ``check_codes=False``
    skips the scan of ``codes`` for ids out of range, for callers that checked them once.
    """
    codes = np.ascontiguousarray(np.asarray(codes))
    res = np.ascontiguousarray(np.asarray(residuals))
    starts = np.ascontiguousarray(np.asarray(starts, dtype=np.int64))
    lengths = np.asarray(lengths, dtype=np.int64)
    q = q.detach().to("cpu", torch.float32).contiguous()
    cents = centroids.detach().to("cpu", torch.float32).contiguous()
    table = table.detach().to("cpu", torch.float32).contiguous()
    dim = q.shape[1] if q.ndim == 2 else -1
    n_d = starts.shape[0]
    if q.ndim != 2 or cents.ndim != 2 or cents.shape[1] != dim:
        raise ValueError(f"residual MaxSim: queries {tuple(q.shape)} and centroids {tuple(cents.shape)} must "
                         "be (n, dim) with the same dim")
    q_off = check_offsets("q", q.shape[0], q_offsets)
    if codes.dtype not in (np.int16, np.int32) or codes.ndim != 1:
        raise ValueError(
            f"residual MaxSim: codes must be int16 or int32 (n_rows,), got {codes.dtype} {codes.shape}")
    if res.dtype != np.uint8 or res.ndim != 2 or res.shape[0] != codes.shape[0]:
        raise ValueError(f"residual MaxSim: residuals must be uint8 ({codes.shape[0]}, n_bytes), got "
                         f"{res.dtype} {res.shape}")
    if table.shape[0] != 256 or table.ndim != 2 or table.shape[1] not in (1, 2, 4, 8) \
            or res.shape[1] * table.shape[1] < dim:
        raise ValueError(f"residual MaxSim: table {tuple(table.shape)} must be (256, values per byte) and "
                         f"cover dim {dim} with {res.shape[1]} bytes per row")
    bad = n_d and (int(lengths.min()) < 0 or int(starts.min()) < 0
                   or int((starts + lengths).max()) > codes.shape[0])
    if lengths.shape != (n_d,) or starts.ndim != 1 or bad:
        raise ValueError(f"residual MaxSim: segments must lie within the {codes.shape[0]} rows "
                         "(starts, lengths >= 0)")
    if check_codes and codes.size and (int(codes.min()) < 0 or int(codes.max()) >= cents.shape[0]):
        raise ValueError(f"residual MaxSim: codes must be centroid ids below {cents.shape[0]}")
    d_off = torch.zeros(n_d + 1, dtype=torch.int64)
    torch.cumsum(torch.from_numpy(lengths), 0, out=d_off[1:])
    n_q = q_off.numel() - 1
    if _ext is None:  # no compiled kernel: decode the rows and score them with the reference
        rows = concat_ranges(starts, lengths)
        x = cents[torch.from_numpy(codes[rows].astype(np.int64))] \
            + table[torch.from_numpy(res[rows].astype(np.int64))].reshape(rows.size, -1)[:, :dim]
        p = check(q, q_off, x, d_off)
        return reference.topk(p, k) if k else reference.scores(p)
    nth = _threads(q.shape[0] * int(d_off[-1]) * dim)
    ptr = (lambda t: 0 if t is None else t.data_ptr())  # noqa: E731
    if k:
        top_s = new_output((nth, n_q, k), torch.float32, "cpu")
        top_i = new_output((nth, n_q, k), torch.int64, "cpu")
        out = None
    else:
        out = new_output((n_q, n_d), torch.float32, "cpu")
        top_s = top_i = None
    _ext.run_residual(
        dim, q.data_ptr(), q.shape[0], q_off.data_ptr(), n_q, codes.ctypes.data, int(codes.dtype == np.int16),
        res.shape[1], res.ctypes.data, res.shape[0], table.shape[1], cents.data_ptr(), table.data_ptr(),
        starts.ctypes.data, d_off.data_ptr(), n_d, ptr(out), k, ptr(top_s), ptr(top_i), nth,
    )  # fmt: skip
    if not k:
        return out
    s = top_s.permute(1, 0, 2).reshape(n_q, -1)
    i = top_i.permute(1, 0, 2).reshape(n_q, -1)
    return reference.merge_topk(s, i, k)


def bag_scores(sims: torch.Tensor, codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
               check_codes: bool = True) -> torch.Tensor:
    """``sum_t max_{c in bag i} sims[t, c]`` for every bag ``i = codes[starts[i] : starts[i] + lengths[i]]``.

    ``sims`` float ``(n_q_tok, n_centroids)`` (query tokens x centroids); ``codes`` int16/int32 centroid
    ids (numpy, memory-mapped arrays included); ``starts``, ``lengths`` int64 ``(n,)``. An empty bag
    scores -inf. Returns float32 ``(n,)``. ``check_codes=False`` skips the scan of ``codes`` for ids out
    of range, for callers that checked them once (an out-of-range id would read out of bounds).
    """
    codes = np.ascontiguousarray(np.asarray(codes))
    starts = np.ascontiguousarray(np.asarray(starts, dtype=np.int64))
    lengths = np.ascontiguousarray(np.asarray(lengths, dtype=np.int64))
    n = starts.shape[0]
    if sims.ndim != 2 or codes.ndim != 1 or codes.dtype not in (np.int16, np.int32):
        raise ValueError(f"bag scores: sims must be (n_q_tok, n_centroids) and codes int16/int32 (n,), got "
                         f"{tuple(sims.shape)} and {codes.dtype} {codes.shape}")
    if lengths.shape != (n,) or (n and (int(lengths.min()) < 0 or int(starts.min()) < 0
                                        or int((starts + lengths).max()) > codes.shape[0])):
        raise ValueError(f"bag scores: bags must lie within the {codes.shape[0]} codes")
    if check_codes and codes.size and (int(codes.min()) < 0 or int(codes.max()) >= sims.shape[1]):
        raise ValueError(f"bag scores: codes must be centroid ids below {sims.shape[1]}")
    st = sims.detach().to("cpu", torch.float32).T.contiguous()  # a contiguous row per centroid
    out = torch.empty(n, dtype=torch.float32)
    if _ext is None:
        rows = concat_ranges(starts, lengths)
        owner = torch.from_numpy(np.repeat(np.arange(n), lengths))
        vals = st[torch.from_numpy(codes[rows].astype(np.int64))]  # (entries, n_q_tok)
        best = torch.full((n, st.shape[1]), float("-inf"))
        best.scatter_reduce_(0, owner[:, None].expand(-1, st.shape[1]), vals, reduce="amax")
        return best.sum(1)
    nth = _threads(int(lengths.sum()) * st.shape[1] * 16)  # a lookup costs about 16 multiply-adds
    _ext.bag_scores(st.data_ptr(), st.shape[1], codes.ctypes.data, int(codes.dtype == np.int16),
                    starts.ctypes.data, lengths.ctypes.data, n, out.data_ptr(), nth)
    return out
