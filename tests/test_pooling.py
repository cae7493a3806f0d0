"""Token reduction at ingest: duplicate dropping across frames, hierarchical pooling, the encoder wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from maxsim.kernels import maxsim_scores

from maxsim.encoders import PooledEncoder
from maxsim.encoders.reduce import drop_duplicate_tokens, pool_tokens, reduce_tokens
from maxsim.errors import EncoderMismatchError
from maxsim.testing.tokens import CorpusSpec, SyntheticCorpus
from tests.color_encoder import ColorEncoder


def _unit(x):
    return torch.nn.functional.normalize(x, dim=1)


def test_static_frames_keep_only_the_first():
    frame = _unit(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)))
    tokens = frame.repeat(5, 1)  # five identical frames
    kept, idx = drop_duplicate_tokens(tokens, n_frames=5, threshold=0.95)
    assert idx.tolist() == list(range(6))
    assert torch.equal(kept, frame)
    kept, idx = drop_duplicate_tokens(tokens, n_frames=5, threshold=1.0)  # 1.0 keeps everything
    assert kept.shape[0] == 30


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.97])
def test_every_dropped_token_has_a_kept_stand_in(threshold):
    c = SyntheticCorpus(CorpusSpec(n_segments=60, frames=8, tokens_per_frame=16, dim=64, seed=1))
    for seg in c.block(0, 60)[:10]:
        kept, idx = drop_duplicate_tokens(seg, n_frames=8, threshold=threshold)
        assert 16 <= kept.shape[0] < seg.shape[0]
        assert (np.diff(idx) > 0).all()  # original order
        dropped = np.setdiff1d(np.arange(seg.shape[0]), idx)
        best = (seg[dropped] @ kept.T).max(1).values
        assert float(best.min()) >= threshold - 1e-6
        # so no query token loses more than sqrt(2 - 2 * threshold) of its best match
        q = _unit(torch.randn(32, 64))
        loss = (q @ seg.T).max(1).values - (q @ kept.T).max(1).values
        assert float(loss.max()) <= math.sqrt(2 - 2 * threshold) + 1e-5


def test_pool_tokens_reduces_by_factor_and_recovers_clusters():
    g = torch.Generator().manual_seed(2)
    centers = _unit(torch.randn(10, 32, generator=g))
    tokens = _unit(centers.repeat_interleave(4, 0) + 0.01 * torch.randn(40, 32, generator=g))
    pooled, assign = pool_tokens(tokens, factor=4)
    assert pooled.shape == (10, 32)
    assert torch.allclose(pooled.norm(dim=1), torch.ones(10), atol=1e-5)
    # each group of four near-copies became one token, in order, close to its centre
    assert assign.tolist() == np.repeat(np.arange(10), 4).tolist()
    assert float((pooled * centers).sum(1).min()) > 0.999
    for factor, n in [(1, 40), (2, 20), (3, 14), (100, 1)]:
        assert pool_tokens(tokens, factor=factor)[0].shape[0] == n
    # windows bound the clustering: each window pools on its own
    pooled, assign = pool_tokens(tokens, factor=2, window=8)
    assert pooled.shape[0] == 20 and assign.max() == 19
    with pytest.raises(ValueError, match="factor"):
        pool_tokens(tokens, factor=0.5)


def test_reduction_keeps_search_agreement_on_synthetic_segments():
    spec = CorpusSpec(n_segments=120, frames=8, tokens_per_frame=16, dim=64, n_concepts=512, seed=4)
    c = SyntheticCorpus(spec)
    segs = c.block(0, 120)
    reduced = [reduce_tokens(s, 8, factor=2, dedup=0.95) for s in segs]
    n_before, n_after = sum(s.shape[0] for s in segs), sum(r.shape[0] for r in reduced)
    assert n_after <= n_before / 2
    targets = np.arange(0, 120, 6)
    q = torch.cat([c.query(segs[t], n_tokens=16, n_match=8, seed=int(t)) for t in targets])
    q_off = torch.arange(0, 16 * len(targets) + 1, 16)

    def scores(docs):
        off = torch.tensor([0] + np.cumsum([d.shape[0] for d in docs]).tolist())
        return maxsim_scores(q, q_off, torch.cat(list(docs)), off)

    full, red = scores(segs), scores(reduced)
    assert (full.argmax(1).numpy() == targets).all()
    assert (full.argmax(1) == red.argmax(1)).float().mean() >= 0.9


def test_pooled_encoder_names_settings_and_reduces_clips(tmp_path):
    from maxsim.engine import Engine
    from maxsim.testing.synthetic import write_video

    write_video(tmp_path / "a.mp4", [(2.0, "red"), (2.0, "blue")], fps=10)
    write_video(tmp_path / "b.mp4", [(2.0, "green"), (2.0, "yellow")], fps=10)
    inner = ColorEncoder()
    enc = PooledEncoder(inner, factor=2, dedup=0.95)
    assert enc.name == "test-color+pool(factor=2,dedup=0.95,window=1024)"
    assert enc.dim == inner.dim
    assert torch.equal(enc.encode_texts(["red"])[0], inner.encode_texts(["red"])[0])

    full = Engine(tmp_path / "full", encoder=inner, segmenter="fixed:2")
    full.ingest([tmp_path / "a.mp4", tmp_path / "b.mp4"], progress=False)
    small = Engine(tmp_path / "small", encoder=enc, segmenter="fixed:2")
    small.ingest([tmp_path / "a.mp4", tmp_path / "b.mp4"], progress=False)
    n_full = sum(p["n_tokens"] for p in full.manifest.parts)
    n_small = sum(p["n_tokens"] for p in small.manifest.parts)
    assert n_small * 4 <= n_full  # static scenes: repeated frames drop, then pooling halves
    for word in ("red", "blue", "green", "yellow"):
        a, b = full.search(word, k=1)[0], small.search(word, k=1)[0]
        assert (a.video, a.start) == (b.video, b.start)
    assert small.manifest.encoder["name"] == enc.name
    with pytest.raises(EncoderMismatchError):
        Engine(tmp_path / "small", encoder=PooledEncoder(inner, factor=4, dedup=0.95))
    with pytest.raises(ValueError, match="factor"):
        PooledEncoder(inner, factor=0)
    with pytest.raises(ValueError, match="dedup"):
        PooledEncoder(inner, dedup=1.5)
