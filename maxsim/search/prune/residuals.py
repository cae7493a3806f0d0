"""Residual codes: a token stored as its nearest centroid plus a few bits per dimension of the difference.

The compression of PLAID-style indexes, used by :mod:`maxsim.candidates` to re-score candidate segments
from compact codes before the exact re-rank reads their full tokens. For a token ``x`` with nearest
centroid ``c``, every component of the residual ``x - c`` is replaced by one of ``2 ** nbits`` bucket
values. The bucket boundaries are quantiles of a sample of residual components (so every bucket is used
about equally often) and each bucket's value is the median of the components that fall in it.
``nbits`` is 1, 2, 4 or 8; ``8 // nbits`` components share a byte, the first in the high bits, and a
dimension that is not a multiple of that is padded with zero components.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

NBITS = (1, 2, 4, 8)


@dataclass(frozen=True)
class ResidualCodec:
    """Bucket boundaries ``(2**nbits - 1,)`` and values ``(2**nbits,)`` for ``dim``-component residuals."""

    nbits: int
    dim: int
    cutoffs: torch.Tensor  # float32, ascending
    values: torch.Tensor  # float32, ascending

    def __post_init__(self) -> None:
        if self.nbits not in NBITS:
            raise ValueError(f"residual bits must be one of {NBITS}, got {self.nbits!r}")
        n = 1 << self.nbits
        if self.cutoffs.shape != (n - 1,) or self.values.shape != (n,):
            raise ValueError(
                f"a {self.nbits}-bit residual codec needs {n - 1} cutoffs and {n} values, got "
                f"{tuple(self.cutoffs.shape)} and {tuple(self.values.shape)}"
            )

    @property
    def per_byte(self) -> int:
        return 8 // self.nbits

    @property
    def bytes_per_token(self) -> int:
        """Bytes of one token's packed residual."""
        return -(-self.dim // self.per_byte)

    @classmethod
    def train(cls, residuals: torch.Tensor, nbits: int = 2) -> ResidualCodec:
        """A codec fitted to a sample of residuals ``(n, dim)`` (float)."""
        if nbits not in NBITS:
            raise ValueError(f"residual bits must be one of {NBITS}, got {nbits!r}")
        if residuals.ndim != 2 or residuals.shape[0] == 0:
            raise ValueError(
                f"residual training needs a non-empty (n, dim) matrix, got {tuple(residuals.shape)}")
        flat = residuals.float().reshape(-1)
        if flat.numel() > 1 << 22:  # quantiles of a fixed-size sample: cheap and as good
            g = torch.Generator().manual_seed(0)
            flat = flat[torch.randint(0, flat.numel(), (1 << 22,), generator=g)]
        n = 1 << nbits
        cutoffs = torch.quantile(flat, torch.arange(1, n, dtype=torch.float32) / n)
        values = torch.quantile(flat, (torch.arange(n, dtype=torch.float32) + 0.5) / n)
        return cls(nbits, int(residuals.shape[1]), cutoffs.contiguous(), values.contiguous())

    def encode(self, residuals: torch.Tensor) -> np.ndarray:
        """Packed codes ``(n, bytes_per_token)`` uint8 of residuals ``(n, dim)``."""
        if residuals.ndim != 2 or residuals.shape[1] != self.dim:
            raise ValueError(f"residuals must be (n, {self.dim}), got {tuple(residuals.shape)}")
        b = torch.bucketize(residuals.float(), self.cutoffs).to(torch.int32)  # 0 .. 2**nbits - 1
        pad = self.bytes_per_token * self.per_byte - self.dim
        if pad:
            zero = int(torch.bucketize(torch.zeros(1), self.cutoffs))
            b = torch.cat([b, torch.full((b.shape[0], pad), zero, dtype=torch.int32)], 1)
        b = b.reshape(b.shape[0], self.bytes_per_token, self.per_byte)
        shifts = torch.arange(self.per_byte - 1, -1, -1, dtype=torch.int32) * self.nbits
        return (b << shifts).sum(2).to(torch.uint8).numpy()

    def table(self) -> torch.Tensor:
        """``(256, per_byte)`` float32: the residual components a byte stands for (computed once)."""
        return self._table

    @functools.cached_property
    def _table(self) -> torch.Tensor:
        v = torch.arange(256, dtype=torch.int32)[:, None]
        shifts = torch.arange(self.per_byte - 1, -1, -1, dtype=torch.int32) * self.nbits
        return self.values[(v >> shifts) & ((1 << self.nbits) - 1)]

    def decode(self, packed: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Residuals ``(n, dim)`` float32 of packed codes ``(n, bytes_per_token)``."""
        p = torch.as_tensor(np.asarray(packed)).to(torch.int64)
        if p.ndim != 2 or p.shape[1] != self.bytes_per_token:
            raise ValueError(f"packed residuals must be (n, {self.bytes_per_token}), got {tuple(p.shape)}")
        return self._table[p].reshape(p.shape[0], -1)[:, : self.dim]

    def to_arrays(self) -> np.ndarray:
        """Cutoffs then values as one float32 array (how a codec is saved)."""
        return np.concatenate([self.cutoffs.numpy(), self.values.numpy()]).astype(np.float32)

    @classmethod
    def from_arrays(cls, arr: np.ndarray, nbits: int, dim: int) -> ResidualCodec:
        n = 1 << nbits
        a = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy())
        if a.shape != (2 * n - 1,):
            raise ValueError(
                f"a {nbits}-bit residual codec is saved as {2 * n - 1} floats, got {tuple(a.shape)}")
        return cls(nbits, dim, a[: n - 1].contiguous(), a[n - 1 :].contiguous())
