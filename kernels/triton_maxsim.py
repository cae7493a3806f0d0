"""The "triton" MaxSim backend: one multi-query segment-tile kernel, scores or fused top-k.

Design (H100-oriented; checked for correctness on CPU under ``TRITON_INTERPRET=1``):

- **Multi-query stacking.** Queries are packed host-side into groups of up to ``QG`` queries whose tokens,
  stacked, fill one ``BLOCK_Q`` tile. A program owns one group and a contiguous range of segments: every
  segment tile it loads is multiplied against all the group's query tokens at once, so a segment is read
  from memory once per group instead of once per query. A query longer than ``BLOCK_Q`` tokens forms its
  own group and is walked in ``BLOCK_Q`` chunks (the segment tile then comes from L1/L2).
- **Ragged, unpadded.** Segments are CSR rows; token tiles past a segment's end are masked to ``-inf``
  before the max (never 0, which is wrong when all similarities are negative). Any dim: the dim loop is
  unrolled at compile time with masked tails.
- **Fused dequantisation.** int8 and fp8 (e4m3) tiles are converted to bf16 in registers (exact) and the
  per-token scale multiplies the similarity columns; a per-segment scale multiplies the per-token maxima.
  fp16/bf16 tiles multiply fp16/bf16 queries; float32 tiles use an IEEE float32 dot. Accumulation is
  float32 throughout.
- **Fused top-k.** With ``TOPK > 0`` a program keeps the ``TOPK`` best (score, index) pairs per query in
  registers while it walks its segments and writes only those; a device-side merge of
  ``n_programs x TOPK`` candidates per query follows (two stable sorts). No ``(n_queries, n_docs)`` matrix
  and no host synchronisation after launch.
- **Autotuning** over tile sizes, warps and stages, keyed on dim, storage dtype, the segment-length bucket
  and the stacked-query block (CUDA only; the interpreter uses one fixed small configuration).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from maxsim.kernels.reference import merge_topk
from maxsim.kernels.validate import FP8, Problem, new_output

_SCALE = {None: 0, "token": 1, "segment": 2}
MAX_QUERIES_PER_GROUP = 16
MAX_TOPK = 256  # larger k falls back to scores + device top-k
# Tile sizes without autotuning (MAXSIM_TRITON_AUTOTUNE=0 on CUDA) and in the interpreter, where fewer,
# larger tiles run faster; tests shrink them to walk the multi-tile paths.
FIXED_BLOCKS = {"BLOCK_T": 64, "BLOCK_D": 128}
INTERPRETER_BLOCKS = {"BLOCK_T": 64, "BLOCK_D": 128}
INTERPRETER_BLOCK_Q = 64


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _maxsim_kernel(
    q_ptr,  # (nq_tok, DIM) compute dtype, queries stacked
    tok_qid_ptr,  # (nq_tok,) int32: token's query index within its group
    grp_ptr,  # (n_groups, 4) int32: first token, end token, first query, number of queries
    d_ptr,  # (rows, DIM) storage dtype
    d_off_ptr,  # (n_d + 1,) int64
    scale_ptr,  # (rows,) or (n_d,) float32, or a dummy
    mask_ptr,  # (n_d,) int8: 0 = the segment is left out (deleted, filtered), when MASK
    out_ptr,  # (n_q, n_d) float32 scores when TOPK == 0
    cand_s_ptr,  # (n_q, n_seg_progs, TOPK) float32 when TOPK > 0
    cand_i_ptr,  # (n_q, n_seg_progs, TOPK) int64
    n_d,
    segs_per_prog,
    n_seg_progs,
    T_BUCKET,  # autotune key only
    DTYPE_ID,  # autotune key only
    DIM: tl.constexpr,
    SCALE: tl.constexpr,
    MASK: tl.constexpr,
    TOPK: tl.constexpr,
    QG: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    N_QCHUNK_MAX: tl.constexpr,  # 1 when every group fits one BLOCK_Q tile
    IEEE: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    g = tl.program_id(0)
    p = tl.program_id(1)
    t0 = tl.load(grp_ptr + g * 4)
    t1 = tl.load(grp_ptr + g * 4 + 1)
    q0 = tl.load(grp_ptr + g * 4 + 2)
    nqg = tl.load(grp_ptr + g * 4 + 3)
    s_lo = p * segs_per_prog
    s_hi = tl.minimum(s_lo + segs_per_prog, n_d)

    offs_q = tl.arange(0, BLOCK_Q)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_D)
    qidx = tl.arange(0, QG)
    neg_inf = float("-inf")

    # A group that fits one tile with the whole dim: keep its query tile in registers for all segments.
    RESIDENT: tl.constexpr = (N_QCHUNK_MAX == 1) and (DIM <= BLOCK_D)
    if RESIDENT:
        tok_r = t0 + offs_q
        q_res = tl.load(
            q_ptr + tok_r[:, None] * DIM + offs_k[None, :],
            mask=(tok_r[:, None] < t1) & (offs_k[None, :] < DIM),
            other=0.0,
        )
    n_qchunks = tl.cdiv(t1 - t0, BLOCK_Q)

    if TOPK > 0:
        slots = tl.arange(0, TOPK)
        top_v = tl.full((QG, TOPK), neg_inf, tl.float32)
        # Placeholders carry distinct negative indices so that exactly one slot is picked per update.
        top_i = tl.zeros((QG, TOPK), tl.int64) - 1 - slots[None, :].to(tl.int64)

    for seg in range(s_lo, s_hi):
        r0 = tl.load(d_off_ptr + seg)
        r1 = tl.load(d_off_ptr + seg + 1)
        if MASK:
            keep = tl.load(mask_ptr + seg) != 0
            r1 = tl.where(keep, r1, r0)  # a left-out segment reads no token
        qsum = tl.zeros((QG,), tl.float32)
        for qc in range(0, n_qchunks):
            tok = t0 + qc * BLOCK_Q + offs_q
            tmask = tok < t1
            # Elementwise running max over token tiles; one cross-lane reduction per segment.
            runmax2 = tl.full((BLOCK_Q, BLOCK_T), neg_inf, tl.float32)
            for r in range(r0, r1, BLOCK_T):
                rows = r + offs_t
                rmask = rows < r1
                acc = tl.zeros((BLOCK_Q, BLOCK_T), tl.float32)
                for kd in tl.static_range(0, DIM, BLOCK_D):
                    kk = kd + offs_k
                    kmask = kk < DIM
                    dt = tl.load(
                        d_ptr + rows[:, None].to(tl.int64) * DIM + kk[None, :],
                        mask=rmask[:, None] & kmask[None, :],
                        other=0.0,
                    )
                    if RESIDENT:
                        qt = q_res
                    else:
                        qt = tl.load(
                            q_ptr + tok[:, None] * DIM + kk[None, :],
                            mask=tmask[:, None] & kmask[None, :],
                            other=0.0,
                        )
                    if DOT_F32:
                        # The interpreter's bf16/fp16 dot and int8->bf16 cast are not faithful: widen both
                        # (exactly) to float32 instead; the products are the same, only the summation
                        # order can differ from the tensor-core path.
                        qt = qt.to(tl.float32)
                        dt = dt.to(tl.float32)
                    else:
                        dt = dt.to(qt.dtype)
                    if IEEE or DOT_F32:
                        acc += tl.dot(qt, tl.trans(dt), input_precision="ieee")
                    else:
                        acc += tl.dot(qt, tl.trans(dt))
                if SCALE == 1:
                    sc = tl.load(scale_ptr + rows, mask=rmask, other=1.0)
                    acc = acc * sc[None, :]
                runmax2 = tl.maximum(runmax2, tl.where(rmask[None, :], acc, neg_inf))
            runmax = tl.max(runmax2, axis=1)
            if SCALE == 2:
                runmax = runmax * tl.load(scale_ptr + seg)
            qid = tl.load(tok_qid_ptr + tok, mask=tmask, other=-1)
            hit = (qid[:, None] == qidx[None, :]) & tmask[:, None]
            qsum += tl.sum(tl.where(hit, runmax[:, None], 0.0), axis=0)
        if TOPK > 0:
            # Insert (qsum, seg) per query: beat the worst kept entry; on an equal score only a placeholder
            # gives way (segments arrive in increasing index, so the lower index stays first).
            minv = tl.min(top_v, axis=1)
            big = tl.full((QG, TOPK), 1 << 62, tl.int64)
            key = tl.where(top_v == minv[:, None], tl.where(top_i < 0, big + slots[None, :], top_i), -1)
            sel = tl.max(key, axis=1)
            ins = (qsum > minv) | ((qsum == minv) & (sel >= (1 << 62)))
            if MASK:
                ins = ins & keep  # a left-out segment never takes a place
            upd = (key == sel[:, None]) & ins[:, None]
            top_v = tl.where(upd, qsum[:, None], top_v)
            top_i = tl.where(upd, tl.zeros((QG, TOPK), tl.int64) + seg, top_i)
        else:
            if MASK:
                qsum = tl.where(keep, qsum, neg_inf)
            tl.store(out_ptr + (q0 + qidx).to(tl.int64) * n_d + seg, qsum, mask=qidx < nqg)

    if TOPK > 0:
        base = ((q0 + qidx).to(tl.int64) * n_seg_progs + p) * TOPK
        ptrs = base[:, None] + slots[None, :]
        m = (qidx < nqg)[:, None]
        tl.store(cand_s_ptr + ptrs, top_v, mask=m)
        tl.store(cand_i_ptr + ptrs, tl.where(top_i < 0, -1, top_i), mask=m)


def _configs() -> list[triton.Config]:
    out = []
    for bt in (32, 64, 128):
        for bd in (64, 128):
            for warps in (4, 8):
                out.append(triton.Config({"BLOCK_T": bt, "BLOCK_D": bd}, num_warps=warps, num_stages=3))
    return out


def _prune(configs, named_args, **kwargs):
    """Keep the dim tile that fits the dim best (64 up to 64 dims, else 128): 6 configs per key."""
    dim = named_args.get("DIM", kwargs.get("DIM"))
    want = 64 if dim is not None and dim <= 64 else 128
    kept = [c for c in configs if c.kwargs["BLOCK_D"] == want]
    return kept or configs


_tuned = triton.autotune(
    configs=_configs(),
    key=["DIM", "DTYPE_ID", "T_BUCKET", "BLOCK_Q", "TOPK", "SCALE", "MASK"],
    prune_configs_by={"early_config_prune": _prune},
)(_maxsim_kernel)

_DTYPE_ID = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.int8: 3, FP8: 4}


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float32:
        return torch.float32
    if dtype == torch.float16:
        return torch.float16
    return torch.bfloat16  # bf16 storage, and int8 / fp8 converted exactly to bf16 in the kernel


def _groups(q_offsets: torch.Tensor, block_q: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pack consecutive queries into groups of <= block_q stacked tokens (a longer query stands alone).

    Returns the (n_groups, 4) int32 table, the per-token local query index and the most q chunks a group
    needs.
    """
    o = q_offsets.tolist()
    n_q = len(o) - 1
    table = []
    first_q = [0] * n_q
    i = 0
    n_chunks = 1
    while i < n_q:
        j, tokens = i, 0
        while j < n_q and j - i < MAX_QUERIES_PER_GROUP:
            length = o[j + 1] - o[j]
            if j > i and tokens + length > block_q:
                break
            tokens += length
            j += 1
        table.append((o[i], o[j], i, j - i))
        first_q[i:j] = [i] * (j - i)
        n_chunks = max(n_chunks, -(-tokens // block_q))
        i = j
    lens = q_offsets[1:] - q_offsets[:-1]
    local = torch.arange(n_q, dtype=torch.int64) - torch.tensor(first_q, dtype=torch.int64)
    tok_qid = torch.repeat_interleave(local, lens).to(torch.int32)
    return torch.tensor(table, dtype=torch.int32).reshape(-1, 4), tok_qid, n_chunks


def _block_q(q_offsets: torch.Tensor) -> int:
    """Stacked query tokens per tile: up to 128 (several short queries share one segment pass)."""
    total = int(q_offsets[-1])
    cap = INTERPRETER_BLOCK_Q if _interpreting() else 128
    return max(16, min(cap, triton.next_power_of_2(max(total, 1))))


def _n_programs_target(device: torch.device) -> int:
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


@dataclass(frozen=True)
class QueryPlan:
    """Queries packed for the kernel once, for any number of launches over segments of one storage dtype:
    the stacked tokens in the compute dtype and the group table, on the device."""

    q: torch.Tensor  # (nq_tok, dim) compute dtype, on the device
    table: torch.Tensor  # (n_groups, 4) int32, on the device
    tok_qid: torch.Tensor  # (nq_tok,) int32, on the device
    n_q: int
    block_q: int
    n_qchunks: int

    @property
    def n_groups(self) -> int:
        return self.table.shape[0]


def plan_queries(q: torch.Tensor, q_offsets: torch.Tensor, storage_dtype: torch.dtype) -> QueryPlan:
    """Pack validated queries (``q_offsets`` on the host) for segments stored as ``storage_dtype``; the
    small tables go to the device through pinned memory without waiting for it."""
    dev = q.device
    block_q = _block_q(q_offsets)
    table, tok_qid, n_qchunks = _groups(q_offsets, block_q)
    if dev.type == "cuda":
        table, tok_qid = table.pin_memory(), tok_qid.pin_memory()
    qc = q.to(_compute_dtype(storage_dtype)).contiguous()
    return QueryPlan(qc, table.to(dev, non_blocking=True), tok_qid.to(dev, non_blocking=True),
                     q_offsets.numel() - 1, block_q, n_qchunks)


def launch(plan: QueryPlan, d: torch.Tensor, d_off: torch.Tensor, n_d: int, d_scale: torch.Tensor | None,
           scale_per: str | None, topk: int, mask: torch.Tensor | None = None, mean_len: float | None = None):
    """One kernel launch: scores ``(n_q, n_d)`` (``topk == 0``) or the candidate lists of the fused top-k
    ``(n_q, n_programs * topk')``. ``d_off`` (int64) and ``mask`` (int8, 0 = left out) are on the device:
    nothing here waits for the device."""
    dev = d.device
    n_q, n_groups = plan.n_q, plan.n_groups
    seg_progs = max(1, min(n_d, math.ceil(_n_programs_target(dev) / max(1, n_groups))))
    segs_per_prog = max(1, math.ceil(n_d / seg_progs))
    seg_progs = max(1, math.ceil(n_d / segs_per_prog))
    scale = d_scale if d_scale is not None else torch.ones(1, dtype=torch.float32, device=dev)
    mask_arg = mask if mask is not None else torch.ones(1, dtype=torch.int8, device=dev)
    if mean_len is None:
        mean_len = d.shape[0] / max(1, n_d)
    t_bucket = 0 if mean_len <= 64 else 1 if mean_len <= 512 else 2
    kp = triton.next_power_of_2(topk) if topk else 0
    if topk:
        cand_s = new_output((n_q, seg_progs, kp), torch.float32, dev)
        cand_i = new_output((n_q, seg_progs, kp), torch.int64, dev)
        out = cand_s  # unused
    else:
        out = new_output((n_q, n_d), torch.float32, dev)
        cand_s = out
        cand_i = torch.empty(1, dtype=torch.int64, device=dev)
    args = (plan.q, plan.tok_qid, plan.table, d, d_off, scale, mask_arg, out, cand_s, cand_i, n_d,
            segs_per_prog, seg_progs, t_bucket, _DTYPE_ID[d.dtype])  # fmt: skip
    meta = dict(
        DIM=d.shape[1], SCALE=_SCALE[scale_per], MASK=mask is not None, TOPK=kp, QG=MAX_QUERIES_PER_GROUP,
        BLOCK_Q=plan.block_q, N_QCHUNK_MAX=plan.n_qchunks, IEEE=d.dtype == torch.float32,
        DOT_F32=_interpreting(),
    )  # fmt: skip
    grid = (n_groups, seg_progs)
    if dev.type == "cuda" and os.environ.get("MAXSIM_TRITON_AUTOTUNE", "1") != "0":
        _tuned[grid](*args, **meta)
    else:
        blocks = dict(FIXED_BLOCKS if dev.type == "cuda" else INTERPRETER_BLOCKS)
        _maxsim_kernel[grid](*args, **meta, **blocks, num_warps=4, num_stages=2)
    if topk:
        return cand_s.reshape(n_q, seg_progs * kp), cand_i.reshape(n_q, seg_progs * kp)
    return out


def scores_planned(plan: QueryPlan, d: torch.Tensor, d_off: torch.Tensor, n_d: int,
                   d_scale: torch.Tensor | None = None, scale_per: str | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """MaxSim scores ``(n_q, n_d)`` of planned queries (left-out segments score ``-inf``)."""
    if plan.n_q == 0 or n_d == 0:
        return torch.empty((plan.n_q, n_d), dtype=torch.float32, device=d.device)
    return launch(plan, d, d_off, n_d, d_scale, scale_per, 0, mask)


def topk_planned(plan: QueryPlan, d: torch.Tensor, d_off: torch.Tensor, n_d: int, k: int,
                 d_scale: torch.Tensor | None = None, scale_per: str | None = None,
                 mask: torch.Tensor | None = None, mean_len: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments of planned queries with the top-k fused into the pass; left-out segments never
    appear (their places stay ``-inf`` / ``-1``). No host synchronisation."""
    dev = d.device
    if k == 0 or plan.n_q == 0 or n_d == 0:
        return (
            torch.full((plan.n_q, k), float("-inf"), dtype=torch.float32, device=dev),
            torch.full((plan.n_q, k), -1, dtype=torch.int64, device=dev),
        )
    if k > MAX_TOPK:
        s = launch(plan, d, d_off, n_d, d_scale, scale_per, 0, mask)
        idx = torch.arange(n_d, device=dev).expand(plan.n_q, -1)
        if mask is not None:
            idx = torch.where(mask.bool()[None, :], idx, -1)
        return merge_topk(s, idx, k)
    cand_s, cand_i = launch(plan, d, d_off, n_d, d_scale, scale_per, k, mask, mean_len)
    return merge_topk(cand_s, cand_i, k)


def scores(p: Problem) -> torch.Tensor:
    """MaxSim scores ``(n_queries, n_docs)`` of a validated problem with the Triton kernel."""
    plan = plan_queries(p.q, p.q_offsets, p.d.dtype)
    return scores_planned(plan, p.d, p.d_offsets.to(p.d.device), p.n_d, p.d_scale, p.scale_per)


def topk(p: Problem, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best segments per query with the top-k fused into the scoring pass (k <= MAX_TOPK)."""
    plan = plan_queries(p.q, p.q_offsets, p.d.dtype)
    return topk_planned(plan, p.d, p.d_offsets.to(p.d.device), p.n_d, k, p.d_scale, p.scale_per)
