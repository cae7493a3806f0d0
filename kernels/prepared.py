"""The same queries against many groups of segments, without repeating the work that does not change.

A search over a placed corpus scores one batch of queries against every group of segments it holds:
:func:`prepare_docs` validates a group once (when it is placed) and keeps its CSR offsets on the device;
:class:`Queries` validates and packs a batch of queries once (for Triton: the stacked tokens and group
table, uploaded once) and scores it against each group with :meth:`Queries.topk`, optionally leaving out
segments by a per-segment mask (deleted or filtered rows). On the Triton and torch backends nothing here
waits for the device: the caller synchronises once, when it reads the merged results.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from maxsim.kernels import cpu as _cpu
from maxsim.kernels import reference as _reference
from maxsim.kernels.backends import resolve_backend
from maxsim.kernels.reference import merge_topk
from maxsim.kernels.validate import Problem, check_docs, check_k, check_mask, check_queries


@dataclass(frozen=True)
class Docs:
    """A group of segments validated for repeated scoring: tokens, offsets on the host and on the device,
    scales (flat float32, per token or per segment)."""

    d: torch.Tensor
    offsets: torch.Tensor  # (n_d + 1,) int64, host
    dev_offsets: torch.Tensor  # the same on d's device
    d_scale: torch.Tensor | None
    scale_per: str | None

    @property
    def n_d(self) -> int:
        return self.offsets.numel() - 1

    @property
    def mean_len(self) -> float:
        return self.d.shape[0] / max(1, self.n_d)

    @property
    def nbytes(self) -> int:
        """Device bytes of the tokens, offsets and scales."""
        n = self.d.numel() * self.d.element_size() + self.dev_offsets.numel() * 8
        return n + (0 if self.d_scale is None else self.d_scale.numel() * 4)


def prepare_docs(d: torch.Tensor, d_offsets: torch.Tensor, d_scale: torch.Tensor | None = None) -> Docs:
    """Validate segments once (see :func:`maxsim.kernels.maxsim_topk` for the formats); their offsets are
    copied to ``d``'s device here."""
    offsets, scale, scale_per = check_docs(d, d_offsets, d_scale)
    dev_offsets = offsets if d.device.type == "cpu" else offsets.to(d.device)
    return Docs(d.detach().contiguous(), offsets, dev_offsets, scale, scale_per)


class Queries:
    """A batch of queries validated and packed once, scored against any number of :class:`Docs` groups
    on its device (``backend``: ``"triton"``, ``"torch"`` or ``"cpu"``; None: the device's default)."""

    def __init__(self, q: torch.Tensor, q_offsets: torch.Tensor, backend: str | None = None) -> None:
        self.offsets = check_queries(q, q_offsets)
        self.q = q.detach().contiguous()
        self.backend = resolve_backend(backend, q.device)
        self._plans: dict[torch.dtype, object] = {}

    @property
    def n_q(self) -> int:
        return self.offsets.numel() - 1

    def _plan(self, storage_dtype: torch.dtype):
        plan = self._plans.get(storage_dtype)
        if plan is None:
            from maxsim.kernels import triton_maxsim  # Triton: optional (Linux only)

            plan = triton_maxsim.plan_queries(self.q, self.offsets, storage_dtype)
            self._plans[storage_dtype] = plan
        return plan

    def topk(self, docs: Docs, k: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best segments of ``docs`` per query, best first, ties by lower index, ``-inf`` /
        ``-1`` past the end; segments whose ``mask`` entry is 0 (bool or int8, on the device) never
        appear."""
        k = check_k(k)
        if docs.d.shape[1] != self.q.shape[1]:
            raise ValueError(
                f"the segments have dim {docs.d.shape[1]} but the queries have dim {self.q.shape[1]}")
        if docs.d.device != self.q.device:
            raise ValueError(f"the segments are on {docs.d.device} but the queries are on {self.q.device}")
        mask = check_mask(mask, docs.n_d, docs.d.device)
        if self.backend == "triton":
            from maxsim.kernels import triton_maxsim  # Triton: optional (Linux only)

            return triton_maxsim.topk_planned(self._plan(docs.d.dtype), docs.d, docs.dev_offsets, docs.n_d, k,
                                              docs.d_scale, docs.scale_per, mask, docs.mean_len)
        p = Problem(self.q, self.offsets, docs.d, docs.offsets, docs.d_scale, docs.scale_per)
        if self.backend == "torch":
            return _reference.topk(p, k, mask)
        if mask is None:
            return _cpu.topk(p, k)
        keep = mask.bool()
        n_out = int((~keep).sum())  # the CPU kernel has no mask: take k more, then drop the left-out ones
        s, idx = _cpu.topk(p, min(docs.n_d, k + n_out))
        ok = keep[idx.clamp(min=0)] & (idx >= 0)
        return merge_topk(torch.where(ok, s, float("-inf")), torch.where(ok, idx, -1), k)
