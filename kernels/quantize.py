"""Storage quantisation of segment vectors, and the on-the-fly query quantisation the CPU kernel uses.

What the store must keep for each storage dtype (``data, scale = quantize(d, dtype, per, offsets)``):

==========  =====================  ==========================================================================
dtype       ``data``               ``scale``
==========  =====================  ==========================================================================
``fp32``    float32 (rows, dim)    None
``bf16``    bfloat16 (rows, dim)   None
``fp16``    float16 (rows, dim)    None
``int8``    int8 (rows, dim)       float32: ``(rows,)`` with ``per="token"``, ``(n_segments, 1)`` with
                                   ``per="segment"``
``fp8``     float8_e4m3fn          same as int8
            (rows, dim)
==========  =====================  ==========================================================================

The score uses ``data * scale`` (a row's scale, or its segment's). Pass both to ``maxsim_scores`` /
``maxsim_topk`` as ``d`` and ``d_scale=scale`` with the same ``d_offsets``. Arrow has no bfloat16 or fp8
type: keep such columns as fixed-size binary / uint16 / uint8 bytes and view them back
(``torch.from_numpy(a).view(torch.bfloat16)`` or ``.view(torch.float8_e4m3fn)``); int8 maps to Arrow
int8. A per-segment scale may be stored as one float32 per segment and reshaped to ``(n, 1)``.

Accuracy of the stored scores (32-token queries, unit-norm 128-d vectors, 200 segments; max / median error
relative to the largest float32 score; tests/test_kernels.py::test_storage_accuracy_against_float32 holds
them): fp16 6e-5 / 1e-5, bf16 4e-4 / 1e-4, int8 per token 1.7e-3 / 4e-4, int8 per segment 2.3e-3 / 5e-4,
fp8 e4m3 (either scale) 7e-3 / 2e-3. Bytes per 128-d token: 512 (fp32), 256 (fp16/bf16), 128 + 4 (int8 /
fp8 per token), 128 (+ 4 per segment).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from maxsim.kernels.validate import FP8, check_offsets

FP8_MAX = 448.0  # largest finite float8_e4m3fn
INT8_MAX = 127.0

StorageDtype = Literal["fp32", "bf16", "fp16", "int8", "fp8"]
_FLOAT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _row_absmax(d: torch.Tensor) -> torch.Tensor:
    return d.detach().float().abs().amax(dim=1) if d.shape[0] else d.new_zeros((0,), dtype=torch.float32)


def quantize(
    d: torch.Tensor,
    dtype: StorageDtype,
    per: Literal["token", "segment"] = "token",
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Convert segment vectors ``d`` (rows, dim) to a storage dtype: ``(data, scale or None)``.

    int8 and fp8 use symmetric absmax scaling, one float32 scale per token row (``per="token"``, shape
    ``(rows,)``) or per segment (``per="segment"``, shape ``(n_segments, 1)``, needs ``offsets``). Rows that
    are all zero get scale 1. Float dtypes are plain casts and return scale None.
    """
    if not isinstance(d, torch.Tensor) or d.ndim != 2:
        raise ValueError(f"d must be a 2-D tensor (rows, dim), got {getattr(d, 'shape', type(d).__name__)}")
    if not d.dtype.is_floating_point:
        raise TypeError(f"d must be a float tensor to quantise, got {d.dtype}")
    if dtype in _FLOAT:
        return d.detach().to(_FLOAT[dtype]).contiguous(), None
    if dtype not in ("int8", "fp8"):
        raise ValueError(f"dtype must be one of fp32, bf16, fp16, int8, fp8, got {dtype!r}")
    if per not in ("token", "segment"):
        raise ValueError(f"per must be 'token' or 'segment', got {per!r}")
    qmax = INT8_MAX if dtype == "int8" else FP8_MAX
    x = d.detach().float()
    amax = _row_absmax(x)
    if per == "segment":
        if offsets is None:
            raise ValueError("per='segment' needs the segments' offsets")
        o = check_offsets("d", d.shape[0], offsets).to(d.device)
        counts = o[1:] - o[:-1]
        seg_amax = torch.zeros(counts.numel(), dtype=torch.float32, device=d.device)
        if d.shape[0]:
            ids = torch.repeat_interleave(torch.arange(counts.numel(), device=d.device), counts)
            seg_amax.scatter_reduce_(0, ids, amax, reduce="amax", include_self=True)
        scale = torch.where(seg_amax > 0, seg_amax / qmax, torch.ones_like(seg_amax))
        row_scale = scale[ids] if d.shape[0] else scale[:0]
        scale = scale[:, None].contiguous()
    else:
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).contiguous()
        row_scale = scale
    y = (x / row_scale[:, None]).clamp_(-qmax, qmax)
    data = y.round_().to(torch.int8) if dtype == "int8" else y.to(FP8)
    return data.contiguous(), scale


def quantize_queries_int8(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric int8 query quantisation for the int8 CPU kernel: ``(q_int8, scale float32)``.

    The rounding error per element is at most half a step (``absmax / 254``); on unit-norm 128-d queries it
    moves a MaxSim score by ~2e-3 relative (see tests/test_kernels.py for the tolerances used). Computed in
    numpy (float32, round half to even, as torch would): a query is a few KB, and torch's intra-op threads
    woken for it cost milliseconds per call and keep spinning on the cores the kernel's threads need.
    """
    x = q.detach().to("cpu", torch.float32).contiguous().numpy()
    amax = np.abs(x).max(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    scale = np.where(amax > 0, amax / np.float32(INT8_MAX), np.float32(1)).astype(np.float32)
    data = np.clip(np.rint(x / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return torch.from_numpy(data), torch.from_numpy(scale)
