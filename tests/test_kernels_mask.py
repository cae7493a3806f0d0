"""Left-out segments (a per-segment mask) and queries prepared once for several groups of segments, on
every backend: the same hits as scoring the kept segments alone."""

from __future__ import annotations

import pytest
import torch
from maxsim.kernels import Queries, prepare_docs

from maxsim import kernels

BACKENDS = ["cpu", "torch", "triton"]  # triton: in the interpreter (tests/conftest.py)


def _ragged(g, n, dim, lo=1, hi=9, dtype=torch.float32):
    counts = torch.randint(lo, hi, (n,), generator=g)
    off = torch.zeros(n + 1, dtype=torch.int64)
    off[1:] = torch.cumsum(counts, 0)
    x = torch.nn.functional.normalize(torch.randn(int(off[-1]), dim, generator=g), dim=1)
    return x.to(dtype), off


def _subset(d, off, keep):
    sel = torch.nonzero(keep).flatten()
    parts = [d[int(off[i]) : int(off[i + 1])] for i in sel]
    counts = torch.tensor([p.shape[0] for p in parts], dtype=torch.int64)
    sub_off = torch.zeros(sel.numel() + 1, dtype=torch.int64)
    sub_off[1:] = torch.cumsum(counts, 0)
    return torch.cat(parts), sub_off, sel


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_masked_topk_equals_topk_of_the_kept_segments(backend, dtype):
    g = torch.Generator().manual_seed(3)
    q, qo = _ragged(g, 3, 32, 2, 6)
    d, do = _ragged(g, 40, 32, dtype=dtype)
    keep = torch.rand(40, generator=g) > 0.6
    s, i = kernels.maxsim_topk(q, qo, d, do, 5, backend=backend, d_mask=keep)
    ds, dso, sel = _subset(d, do, keep)
    rs, ri = kernels.maxsim_topk(q, qo, ds, dso, 5, backend="torch")
    torch.testing.assert_close(s, rs, atol=2e-3, rtol=0)
    assert torch.equal(i, torch.where(ri >= 0, sel[ri.clamp(min=0)], -1))
    scores = kernels.maxsim_scores(q, qo, d, do, backend=backend, d_mask=keep.to(torch.int8))
    assert torch.isneginf(scores[:, ~keep]).all() and torch.isfinite(scores[:, keep]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_everything_left_out_gives_no_hit(backend):
    g = torch.Generator().manual_seed(4)
    q, qo = _ragged(g, 2, 16)
    d, do = _ragged(g, 10, 16)
    s, i = kernels.maxsim_topk(q, qo, d, do, 3, backend=backend, d_mask=torch.zeros(10, dtype=torch.bool))
    assert torch.isneginf(s).all() and (i == -1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_queries_prepared_once_score_several_groups(backend):
    g = torch.Generator().manual_seed(5)
    q, qo = _ragged(g, 4, 24, 3, 7)
    groups = [_ragged(g, n, 24) for n in (7, 1, 30)]
    queries = Queries(q, qo, backend)
    for d, do in groups:
        docs = prepare_docs(d, do)
        s, i = queries.topk(docs, 4)
        rs, ri = kernels.maxsim_topk(q, qo, d, do, 4, backend="torch")
        torch.testing.assert_close(s, rs, atol=1e-4, rtol=0)
        assert torch.equal(i, ri)


def test_bad_masks_are_refused():
    g = torch.Generator().manual_seed(6)
    q, qo = _ragged(g, 1, 8)
    d, do = _ragged(g, 5, 8)
    with pytest.raises(ValueError, match=r"d_mask must have shape \(5,\)"):
        kernels.maxsim_topk(q, qo, d, do, 2, d_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool or int8"):
        kernels.maxsim_topk(q, qo, d, do, 2, d_mask=torch.ones(5))
