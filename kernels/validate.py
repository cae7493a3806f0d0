"""Argument checks shared by every MaxSim backend: shapes, dtypes, devices, CSR offsets and scales."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FP8 = torch.float8_e4m3fn
STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8, FP8)
SCALED_DTYPES = (torch.int8, FP8)


@dataclass(frozen=True)
class Problem:
    """A validated MaxSim call. Offsets are host int64 copies; ``scale_per`` is None, "token" or "segment"."""

    q: torch.Tensor
    q_offsets: torch.Tensor
    d: torch.Tensor
    d_offsets: torch.Tensor
    d_scale: torch.Tensor | None
    scale_per: str | None

    @property
    def n_q(self) -> int:
        return self.q_offsets.numel() - 1

    @property
    def n_d(self) -> int:
        return self.d_offsets.numel() - 1

    @property
    def dim(self) -> int:
        return self.q.shape[1]


def check_offsets(name: str, rows: int, offsets: torch.Tensor) -> torch.Tensor:
    """Validate CSR offsets for a ``rows``-row matrix; return them as a host int64 tensor."""
    if not isinstance(offsets, torch.Tensor):
        raise TypeError(f"{name}_offsets must be a torch.Tensor, got {type(offsets).__name__}")
    if offsets.ndim != 1 or offsets.numel() < 1:
        raise ValueError(
            f"{name}_offsets must be 1-D with n + 1 >= 1 entries, got shape {tuple(offsets.shape)}"
        )
    if offsets.dtype.is_floating_point or offsets.dtype.is_complex or offsets.dtype == torch.bool:
        raise TypeError(f"{name}_offsets must be an integer tensor, got {offsets.dtype}")
    o = offsets.detach().to("cpu", torch.int64).contiguous()
    if int(o[0]) != 0:
        raise ValueError(f"{name}_offsets must start at 0, got {int(o[0])}")
    if int(o[-1]) != rows:
        raise ValueError(f"{name}_offsets must end at the row count {rows} of {name}, got {int(o[-1])}")
    if o.numel() > 1 and bool((o[1:] < o[:-1]).any()):
        bad = int(torch.nonzero(o[1:] < o[:-1])[0, 0])
        raise ValueError(
            f"{name}_offsets must be non-decreasing, but entry {bad + 1} ({int(o[bad + 1])}) < entry {bad} "
            f"({int(o[bad])})"
        )
    return o


def check_queries(q: torch.Tensor, q_offsets: torch.Tensor) -> torch.Tensor:
    """Validate query tokens and their CSR offsets; return the offsets as a host int64 tensor."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor, got {type(q).__name__}")
    if q.ndim != 2:
        raise ValueError(f"q must be 2-D (total_tokens, dim), got shape {tuple(q.shape)}")
    if q.dtype not in QUERY_DTYPES:
        raise TypeError(f"q must be float32, float16 or bfloat16, got {q.dtype}")
    if q.shape[1] < 1:
        raise ValueError("dim must be >= 1")
    return check_offsets("q", q.shape[0], q_offsets)


def check_docs(d: torch.Tensor, d_offsets: torch.Tensor, d_scale: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
    """Validate segment tokens, their CSR offsets and scales; return ``(host int64 offsets, flat float32
    scales or None, "token" | "segment" | None)``."""
    if not isinstance(d, torch.Tensor):
        raise TypeError(f"d must be a torch.Tensor, got {type(d).__name__}")
    if d.ndim != 2:
        raise ValueError(f"d must be 2-D (total_tokens, dim), got shape {tuple(d.shape)}")
    if d.dtype not in STORAGE_DTYPES:
        names = ", ".join(str(t).removeprefix("torch.") for t in STORAGE_DTYPES)
        raise TypeError(f"d must be one of {names}, got {d.dtype}")
    do = check_offsets("d", d.shape[0], d_offsets)
    n_d = do.numel() - 1
    scale_per = None
    if d_scale is not None:
        if not isinstance(d_scale, torch.Tensor):
            raise TypeError(f"d_scale must be a torch.Tensor or None, got {type(d_scale).__name__}")
        if not d_scale.dtype.is_floating_point or d_scale.dtype == FP8:
            raise TypeError(f"d_scale must be a float tensor (float32 preferred), got {d_scale.dtype}")
        if d_scale.device != d.device:
            raise ValueError(f"d_scale is on {d_scale.device} but d is on {d.device}")
        if d_scale.ndim == 1 and d_scale.shape[0] == d.shape[0]:
            scale_per = "token"
        elif d_scale.ndim == 2 and tuple(d_scale.shape) == (n_d, 1):
            scale_per = "segment"
        else:
            raise ValueError(
                f"d_scale must have shape ({d.shape[0]},) (one scale per token row) or ({n_d}, 1) (one per "
                f"segment), got {tuple(d_scale.shape)}"
            )
        d_scale = d_scale.detach().to(torch.float32).reshape(-1).contiguous()
    return do, d_scale, scale_per


def check(
    q: torch.Tensor,
    q_offsets: torch.Tensor,
    d: torch.Tensor,
    d_offsets: torch.Tensor,
    d_scale: torch.Tensor | None = None,
) -> Problem:
    """Validate a MaxSim call and return it normalised (contiguous tensors, host int64 offsets)."""
    for name, x in (("q", q), ("d", d)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (total_tokens, dim), got shape {tuple(x.shape)}")
    qo = check_queries(q, q_offsets)
    if d.dtype not in STORAGE_DTYPES:
        names = ", ".join(str(t).removeprefix("torch.") for t in STORAGE_DTYPES)
        raise TypeError(f"d must be one of {names}, got {d.dtype}")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"d has dim {d.shape[1]} but q has dim {q.shape[1]}")
    if q.device != d.device:
        raise ValueError(f"q is on {q.device} but d is on {d.device}; move both to one device")
    do, d_scale, scale_per = check_docs(d, d_offsets, d_scale)
    return Problem(q.detach().contiguous(), qo, d.detach().contiguous(), do, d_scale, scale_per)


def check_mask(mask: torch.Tensor | None, n_d: int, device: torch.device) -> torch.Tensor | None:
    """Validate a per-segment mask (bool or int8/uint8, nonzero = the segment is searched); returned as
    int8 on ``device`` (None stays None)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"d_mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.ndim != 1 or mask.shape[0] != n_d:
        raise ValueError(f"d_mask must have shape ({n_d},) (one entry per segment), got {tuple(mask.shape)}")
    if mask.dtype not in (torch.bool, torch.int8, torch.uint8):
        raise TypeError(f"d_mask must be bool or int8, got {mask.dtype}")
    if mask.device != device:
        raise ValueError(f"d_mask is on {mask.device} but d is on {device}")
    return mask.to(torch.int8).contiguous()


def check_k(k: int) -> int:
    """Validate a top-k size."""
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            k = int(k.__index__())  # numpy / torch integer scalars
        except (AttributeError, TypeError):
            raise TypeError(f"k must be an int, got {type(k).__name__}") from None
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return k


def new_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An uninitialised output buffer; with ``MAXSIM_DEBUG_POISON=1`` it is filled with NaN (floats) or
    a large negative sentinel (integers), so any element a kernel forgets to write shows up in tests."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if os.environ.get("MAXSIM_DEBUG_POISON", "0") not in ("", "0"):
        out.fill_(float("nan") if dtype.is_floating_point else -(2**40) + 7)
    return out
