"""The "cpu" MaxSim backend: the compiled fused kernel (kernels/csrc/) behind a torch wrapper.

Instruction paths, chosen per call from the CPU's features (cpuid), best first:

==============  ==============================================================================================
``amx``         AMX tiles: int8 segments on TDPBSSD, bf16 and fp8 on TDPBF16PS (Sapphire Rapids and later)
``avx512bf16``  bf16 and fp8 segments on ``vdpbf16ps``, int8 on ``vpdpbusd`` (AVX-512 BF16 + VNNI: Zen 4+,
                Cooper Lake)
``avx512vnni``  int8 segments on ``vpdpbusd`` (AVX-512 VNNI: Ice Lake, Cascade Lake)
``avx512``      float32 FMA on AVX-512 for every storage dtype (Skylake-SP)
``avxvnni``     int8 on the VEX ``vpdpbusd`` (AVX-VNNI, AVX2-class CPUs such as Alder Lake), else as avx2
``avx2``        float32 FMA on AVX2 for every storage dtype (any x86-64 CPU of the last decade)
``portable``    plain C (other CPUs, old compilers)
==============  ==============================================================================================

A path also runs what the paths below it run for the dtypes it does not speed up (fp32 and fp16 segments
take the float32 FMA kernel of the best vector width). ``MAXSIM_CPU_ISA=<path>`` forces one (``auto``, the
default, takes the best); asking for a path this CPU cannot run raises a RuntimeError naming what it lacks.
:func:`info` tells which path is in force and which kernel scores each storage dtype.

Per storage dtype of the segments:

- int8: queries are quantised on the fly to int8 with one scale per token (see
  :func:`~maxsim.kernels.quantize.quantize_queries_int8`); the VNNI and AMX kernels multiply the int8 values
  with exact int32 sums, the float kernels the same values in float32 (exact integer products), so every
  path gives the same scores up to summation order. The query rounding costs up to ~4e-4 per query token on
  unit-norm vectors (~1e-3 of a 32-token score).
- bf16: queries are rounded to bf16 (~1e-4 per query token); products on AMX or ``vdpbf16ps`` where the CPU
  has them, else the float kernels; float32 accumulation either way.
- fp8 (e4m3): widened to bf16 (exactly) in the kernel, a block of rows at a time, then as bf16.
- fp16 and float32: the float32 kernels with float32 queries (fp16 rows widened exactly in the kernel).

Residual-coded segments (:func:`residual_scores`, the refine stage of pruned search) go through the same
float kernels, each row widened from its centroid and its packed residual bytes; :func:`bag_scores` sums,
over query tokens, the best centroid similarity in each segment's bag of centroids. Both follow the same
path choice.

Top-k runs inside the kernel (a sorted list per thread and query, merged here), so the
``(n_queries, n_segments)`` score matrix is never materialised. Without the compiled extension (no compiler
at install time, a non-x86 wheel), the backend runs the plain torch path of kernels/reference.py instead;
:func:`path` tells which one runs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from maxsim.kernels import reference
from maxsim.kernels.quantize import quantize_queries_int8
from maxsim.kernels.validate import FP8, Problem, check, check_offsets, new_output

try:
    from maxsim.kernels import _maxsim_cpu as _ext
except ImportError:  # built without a C compiler: the torch path below stands in
    _ext = None

# The instruction paths in the order of the C enum (kernels/csrc/maxsim_cpu.h), lowest first.
PATHS = ("portable", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16", "amx")
ISA_ENV = "MAXSIM_CPU_ISA"
_SCALE = {None: 0, "token": 1, "segment": 2}
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.int8: "int8", FP8: "float8_e4m3fn"}  # fmt: skip
# Rows of segments converted (fp16, fp8) or handed to the kernel per call.
CHUNK_ROWS = 1 << 21
# Below this many multiply-adds a call runs on one thread (thread start-up would dominate).
_MIN_PARALLEL_MACS = 1 << 22


def available() -> bool:
    """Whether the compiled kernel is installed."""
    return _ext is not None


@lru_cache(maxsize=1)
def _features() -> dict[str, Any]:
    return _ext.features()


def usable_paths() -> list[str]:
    """The instruction paths this CPU and build can run, best first (empty without the extension)."""
    if _ext is None:
        return []
    return [name for name in reversed(PATHS) if _features()["paths"][name]["usable"]]


def resolve_isa(isa: str | None = None) -> str:
    """The instruction path a call runs: ``isa`` if given, else ``MAXSIM_CPU_ISA``, else (``auto`` or unset)
    the best this CPU runs. A path this CPU or build cannot run is a RuntimeError saying what it lacks;
    an unknown name is a ValueError."""
    source = "isa" if isa is not None else ISA_ENV
    name = (isa if isa is not None else os.environ.get(ISA_ENV, "")).strip().lower()
    if name not in ("", "auto") and name not in PATHS:
        raise ValueError(f"{source}={name!r} is not a CPU kernel path: expected auto or one of "
                         f"{', '.join(reversed(PATHS))}")
    if _ext is None:
        if name in ("", "auto"):
            return "torch"
        raise RuntimeError(f"{source}={name}: the compiled CPU kernel is not installed (no C compiler at "
                           "install time), so only the torch fallback runs")
    if name in ("", "auto"):
        return usable_paths()[0]
    rec = _features()["paths"][name]
    if not rec["built"]:
        raise RuntimeError(f"{source}={name}: this build of the CPU kernel has no {name} path (it was "
                           "compiled without SIMD support: gcc >= 11 or clang >= 12 on x86-64 is needed)")
    if not rec["usable"]:
        raise RuntimeError(f"{source}={name}: this CPU cannot run the {name} path: it lacks "
                           f"{', '.join(rec['missing'])}")
    return name


def info(isa: str | None = None) -> dict[str, Any]:
    """What the CPU backend runs here: ``isa`` (the path in force: ``MAXSIM_CPU_ISA`` or the best usable,
    "torch" without the extension), ``forced`` (the variable's value, or None), ``paths`` (the kernel that
    scores each storage dtype, plus ``residual`` and ``bag`` for the pruned-search kernels), ``usable``
    (paths this CPU runs, best first), ``unusable`` (every other path with the CPU features it lacks) and
    ``features`` (the CPU features the paths need)."""
    forced = os.environ.get(ISA_ENV, "").strip().lower() or None
    level = resolve_isa(isa)
    names = (*_DTYPE_NAMES.values(), "residual", "bag")
    if _ext is None:
        return {"extension": False, "isa": "torch", "forced": forced, "paths": dict.fromkeys(names, "torch"),
                "usable": [], "unusable": {}, "features": {}}  # fmt: skip
    f = _features()
    return {
        "extension": True, "isa": level, "forced": forced, "paths": _ext.kernels(PATHS.index(level)),
        "usable": usable_paths(),
        "unusable": {n: r["missing"] or ["a SIMD build"] for n, r in f["paths"].items() if not r["usable"]},
        "features": dict(f["features"]),
    }  # fmt: skip


def amx() -> bool:
    """Whether the AMX int8/bf16 paths are usable on this CPU (and the extension is installed)."""
    return "amx" in usable_paths()


def path(dtype: torch.dtype, isa: str | None = None) -> str:
    """Which kernel scores segments of ``dtype`` here: one of :data:`PATHS`, or "torch" without the
    extension."""
    return info(isa)["paths"][_DTYPE_NAMES[dtype]]


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


def _run_chunk(p: Problem, i: int, j: int, qk, qscale, kind: int, level: int, k: int,
               out: torch.Tensor | None):
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
        ptr(tile), k, ptr(top_s), ptr(top_i), nth, level,
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


def scores(p: Problem, isa: str | None = None) -> torch.Tensor:
    """MaxSim scores ``(n_queries, n_docs)`` of a validated problem on CPU tensors, on instruction path
    ``isa`` (None: ``MAXSIM_CPU_ISA`` or the best this CPU runs; see :func:`resolve_isa`)."""
    level = resolve_isa(isa)
    if _ext is None:
        return reference.scores(p)
    kind = _kind(p.d.dtype)
    qk, qscale = _prepare_queries(p, kind)
    out = new_output((p.n_q, p.n_d), torch.float32, "cpu")
    for i, j in _chunks(p):
        _run_chunk(p, i, j, qk, qscale, kind, PATHS.index(level), 0, out)
    return out


def topk(p: Problem, k: int, isa: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query (best first, ties by lower index, -inf / -1 tail), on path ``isa``."""
    level = resolve_isa(isa)
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
    qk, qscale = _prepare_queries(p, kind)
    best_s, best_i = empty_s, empty_i
    for i, j in _chunks(p):
        s, idx = _run_chunk(p, i, j, qk, qscale, kind, PATHS.index(level), k, None)
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
    isa: str | None = None,
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
    skips the scan of ``codes`` for ids out of range, for callers that checked them once. ``isa``: the
    instruction path (see :func:`resolve_isa`).
    """
    level = resolve_isa(isa)
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
        PATHS.index(level),
    )  # fmt: skip
    if not k:
        return out
    s = top_s.permute(1, 0, 2).reshape(n_q, -1)
    i = top_i.permute(1, 0, 2).reshape(n_q, -1)
    return reference.merge_topk(s, i, k)


def bag_scores(sims: torch.Tensor, codes: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
               check_codes: bool = True, isa: str | None = None) -> torch.Tensor:
    """``sum_t max_{c in bag i} sims[t, c]`` for every bag ``i = codes[starts[i] : starts[i] + lengths[i]]``.

    ``sims`` float ``(n_q_tok, n_centroids)`` (query tokens x centroids); ``codes`` int16/int32 centroid
    ids (numpy, memory-mapped arrays included); ``starts``, ``lengths`` int64 ``(n,)``. An empty bag
    scores -inf. Returns float32 ``(n,)``. ``check_codes=False`` skips the scan of ``codes`` for ids out
    of range, for callers that checked them once (an out-of-range id would read out of bounds). ``isa``:
    the instruction path (see :func:`resolve_isa`).
    """
    level = resolve_isa(isa)
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
                    starts.ctypes.data, lengths.ctypes.data, n, out.data_ptr(), nth, PATHS.index(level))
    return out
