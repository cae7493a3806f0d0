"""The torch reference MaxSim against a plain float64 loop, on random ragged inputs."""

import numpy as np
import pytest
import torch
from maxsim.kernels import maxsim_scores, maxsim_topk


def ragged(rng, lengths, dim, negative=False):
    x = rng.standard_normal((int(sum(lengths)), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if negative:
        x = -np.abs(x)
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return x, off


def slow(q, qo, d, do):
    out = np.empty((len(qo) - 1, len(do) - 1))
    for i in range(len(qo) - 1):
        for j in range(len(do) - 1):
            qi, dj = q[qo[i] : qo[i + 1]], d[do[j] : do[j + 1]]
            out[i, j] = (qi @ dj.T).max(1).sum() if len(dj) else -np.inf
    return out


@pytest.mark.parametrize("dim", [1, 48, 128, 320])
@pytest.mark.parametrize("negative", [False, True])
def test_scores_match_float64(dim, negative):
    rng = np.random.default_rng(dim)
    q, qo = ragged(rng, [1, 7, 32], dim, negative)
    d, do = ragged(rng, rng.integers(1, 40, size=57), dim, negative)
    if negative:
        q = np.abs(q)  # q >= 0 and d <= 0: every similarity is <= 0
    got = maxsim_scores(
        torch.tensor(q, dtype=torch.float32),
        torch.tensor(qo),
        torch.tensor(d, dtype=torch.float16),
        torch.tensor(do),
    )
    want = slow(q, qo, d.astype(np.float16).astype(np.float64), do)
    assert got.dtype == torch.float32 and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)
    if negative:
        assert (got < 0).all()


def test_empty_segments_and_queries():
    rng = np.random.default_rng(1)
    q, qo = ragged(rng, [3, 0], 16)
    d, do = ragged(rng, [4, 0, 2], 16)
    got = maxsim_scores(torch.tensor(q).float(), torch.tensor(qo), torch.tensor(d).float(), torch.tensor(do))
    assert torch.isneginf(got[0, 1])  # a segment with no token never matches
    assert (got[1] == 0).all()  # a query with no token sums nothing


def test_topk_order_ties_and_tail(monkeypatch):
    import maxsim.kernels.reference as ref

    monkeypatch.setattr(ref, "_BLOCK_ELEMENTS", 64)  # force many blocks through the running merge
    rng = np.random.default_rng(2)
    q, qo = ragged(rng, [5, 2, 9], 24)
    d, do = ragged(rng, rng.integers(1, 12, size=40), 24)
    d = np.concatenate([d, d[do[3] : do[4]]])  # segment 40 ties with segment 3
    do = np.append(do, do[-1] + (do[4] - do[3]))
    args = (torch.tensor(q).float(), torch.tensor(qo), torch.tensor(d).float(), torch.tensor(do))
    full = slow(q, qo, d, do)
    s, i = maxsim_topk(*args, k=45)
    assert s.shape == (3, 45) and i.shape == (3, 45)
    for row in range(3):
        order = sorted(range(41), key=lambda j: (-round(full[row, j], 5), j))
        assert i[row, :41].tolist() == order
        np.testing.assert_allclose(s[row, :41].numpy(), full[row, order], rtol=1e-5, atol=1e-5)
        assert i[row, 41:].tolist() == [-1] * 4 and torch.isneginf(s[row, 41:]).all()
    s3, i3 = maxsim_topk(*args, k=3)
    assert torch.equal(i3, i[:, :3])


def test_bad_arguments():
    q, d = torch.randn(4, 8), torch.randn(6, 8)
    with pytest.raises(ValueError, match="end at the row count"):
        maxsim_scores(q, torch.tensor([0, 3]), d, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="non-decreasing"):
        maxsim_scores(q, torch.tensor([0, 4]), d, torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match="dim"):
        maxsim_scores(q, torch.tensor([0, 4]), torch.randn(6, 9), torch.tensor([0, 6]))
    with pytest.raises(TypeError, match="integer"):
        maxsim_scores(q, torch.tensor([0.0, 4.0]), d, torch.tensor([0, 6]))
