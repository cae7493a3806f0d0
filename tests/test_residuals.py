"""Residual codes (maxsim.residuals) and the CPU kernels that score them in place (kernels.cpu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from maxsim.kernels import cpu, reference
from maxsim.kernels.validate import check

from maxsim.search.prune.residuals import ResidualCodec

# The compiled kernels on every instruction path (forced with MAXSIM_CPU_ISA), then the torch fallback.
IMPLS = [*reversed(cpu.PATHS), "torch-fallback"]


def _use(impl: str, monkeypatch) -> None:
    """Run the kernels of ``impl``: a forced instruction path (skipped where this CPU lacks it) or torch."""
    if impl == "torch-fallback":
        monkeypatch.setattr(cpu, "_ext", None)
        monkeypatch.delenv("MAXSIM_CPU_ISA", raising=False)
        return
    if not cpu.available():
        pytest.skip("compiled CPU kernel not built")
    why = cpu.info("auto")["unusable"].get(impl)
    if why:
        pytest.skip(f"this CPU cannot run the {impl} path: it lacks {', '.join(why)}")
    monkeypatch.setenv("MAXSIM_CPU_ISA", impl)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1)


def _coded(dim: int, nbits: int, n: int = 600, n_c: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cents = _unit(torch.randn(n_c, dim, generator=g))
    codes = torch.randint(0, n_c, (n,), generator=g)
    x = _unit(cents[codes] + 0.6 * torch.randn(n, dim, generator=g) / dim**0.5)
    codec = ResidualCodec.train(x - cents[codes], nbits)
    packed = codec.encode(x - cents[codes])
    return cents, codes, x, codec, packed


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [32, 37])
def test_codec_round_trip(nbits, dim):
    cents, codes, x, codec, packed = _coded(dim, nbits)
    per = 8 // nbits
    assert packed.dtype == np.uint8 and packed.shape == (x.shape[0], -(-dim // per))
    r = codec.decode(packed)
    assert r.shape == x.shape
    # every decoded component is one of the bucket values, the one whose bucket holds the true component
    true_r = x - cents[codes]
    want = codec.values[torch.bucketize(true_r, codec.cutoffs)]
    assert torch.equal(r, want)
    # buckets are quantiles: each holds about the same share of the components
    share = torch.bincount(torch.bucketize(true_r.reshape(-1), codec.cutoffs), minlength=1 << nbits).float()
    share /= share.sum()
    assert float(share.max() - share.min()) < 0.05
    # more bits, closer tokens
    cos = torch.nn.functional.cosine_similarity(cents[codes] + r, x).mean()
    base = torch.nn.functional.cosine_similarity(cents[codes], x).mean()
    assert float(cos) > float(base)
    if nbits >= 4:
        assert float(cos) > 0.97
    again = ResidualCodec.from_arrays(codec.to_arrays(), nbits, dim)
    assert torch.equal(again.cutoffs, codec.cutoffs) and torch.equal(again.values, codec.values)


def test_codec_errors():
    with pytest.raises(ValueError, match="bits"):
        ResidualCodec.train(torch.randn(10, 4), 3)
    with pytest.raises(ValueError, match="non-empty"):
        ResidualCodec.train(torch.zeros(0, 4), 2)
    codec = ResidualCodec.train(torch.randn(100, 8), 2)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        codec.encode(torch.randn(3, 9))
    with pytest.raises(ValueError, match="packed"):
        codec.decode(np.zeros((3, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="saved as 7 floats"):
        ResidualCodec.from_arrays(np.zeros(6, dtype=np.float32), 2, 8)


def _segments(n_rows: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 12, 30)
    lens[3] = 0  # an empty segment
    starts = rng.integers(0, n_rows - 12, 30)
    return starts.astype(np.int64), lens.astype(np.int64)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("dim", "nbits", "code_dtype"), [
    (64, 2, np.int16), (40, 2, np.int32), (33, 4, np.int16), (24, 1, np.int32), (16, 8, np.int16)])
def test_residual_scores_match_reference_on_decoded_rows(monkeypatch, impl, dim, nbits, code_dtype):
    _use(impl, monkeypatch)
    cents, codes, x, codec, packed = _coded(dim, nbits)
    decoded = cents[codes] + codec.decode(packed)
    starts, lens = _segments(x.shape[0])
    q = torch.randn(45, dim)  # more than one 32-token chunk
    q_off = torch.tensor([0, 7, 45])
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lens, strict=True)])
    off = torch.from_numpy(np.concatenate([[0], np.cumsum(lens)]))
    want = reference.scores(check(q, q_off, decoded[torch.from_numpy(rows)], off))
    c = codes.numpy().astype(code_dtype)
    got = cpu.residual_scores(q, q_off, cents, c, packed, codec.table(), starts, lens)
    assert got.shape == (2, 30)
    assert torch.isneginf(got[:, 3]).all()
    assert torch.allclose(got, want, atol=1e-4, equal_nan=True)
    s, i = cpu.residual_scores(q, q_off, cents, c, packed, codec.table(), starts, lens, k=5)
    ws, wi = reference.topk(check(q, q_off, decoded[torch.from_numpy(rows)], off), 5)
    assert torch.equal(i, wi) and torch.allclose(s, ws, atol=1e-4)


def test_residual_scores_read_memory_mapped_codes(tmp_path):
    cents, codes, x, codec, packed = _coded(32, 2)
    np.save(tmp_path / "codes.npy", codes.numpy().astype(np.int16))
    np.save(tmp_path / "res.npy", packed)
    mc = np.load(tmp_path / "codes.npy", mmap_mode="r")
    mr = np.load(tmp_path / "res.npy", mmap_mode="r")
    starts, lens = _segments(x.shape[0])
    q, q_off = torch.randn(8, 32), torch.tensor([0, 8])
    a = cpu.residual_scores(q, q_off, cents, mc, mr, codec.table(), starts, lens)
    c = codes.numpy().astype(np.int16)
    b = cpu.residual_scores(q, q_off, cents, c, packed, codec.table(), starts, lens)
    assert torch.equal(a, b)


def test_residual_scores_refuse_out_of_range_input():
    cents, codes, x, codec, packed = _coded(16, 2, n=50)
    q, q_off = torch.randn(4, 16), torch.tensor([0, 4])
    c16 = codes.numpy().astype(np.int16)
    args = (q, q_off, cents, c16, packed, codec.table())
    with pytest.raises(ValueError, match="within the 50 rows"):
        cpu.residual_scores(*args, np.array([45]), np.array([6]))
    with pytest.raises(ValueError, match="within the 50 rows"):
        cpu.residual_scores(*args, np.array([-1]), np.array([2]))
    bad = c16.copy()
    bad[7] = 40
    with pytest.raises(ValueError, match="centroid ids below 40"):
        cpu.residual_scores(q, q_off, cents, bad, packed, codec.table(), np.array([0]), np.array([10]))
    with pytest.raises(ValueError, match="uint8"):
        cpu.residual_scores(q, q_off, cents, c16, packed.astype(np.int16), codec.table(), np.array([0]),
                            np.array([1]))
    with pytest.raises(ValueError, match="same dim"):
        cpu.residual_scores(torch.randn(4, 8), q_off, cents, c16, packed, codec.table(), np.array([0]),
                            np.array([1]))
    # no segment: an empty result of the right shape
    assert cpu.residual_scores(*args, np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (1, 0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_tok", [37, 5, 64, 130])
def test_bag_scores(monkeypatch, impl, n_tok):
    """Query token counts below, at and across the vector widths (8, 16, 32, 64 lanes) of every path."""
    _use(impl, monkeypatch)
    g = torch.Generator().manual_seed(0)
    sims = torch.randn(n_tok, 300, generator=g)  # query tokens x centroids
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 300, 2000).astype(np.int32)
    starts, lens = rng.integers(0, 1980, 50), rng.integers(0, 20, 50)
    lens[0] = 0
    got = cpu.bag_scores(sims, codes, starts, lens)
    for i in range(50):
        if lens[i] == 0:
            assert got[i] == float("-inf")
            continue
        bag = torch.from_numpy(codes[starts[i]:starts[i] + lens[i]].astype(np.int64))
        want = float(sims[:, bag].max(1).values.double().sum())
        assert float(got[i]) == pytest.approx(want, rel=1e-6, abs=1e-4)
    assert torch.equal(cpu.bag_scores(sims, codes.astype(np.int16), starts, lens), got)
    with pytest.raises(ValueError, match="below 300"):
        cpu.bag_scores(sims, np.array([0, 300], dtype=np.int32), np.array([0]), np.array([2]))
    with pytest.raises(ValueError, match="within the 2000 codes"):
        cpu.bag_scores(sims, codes, np.array([1990]), np.array([20]))
