"""The color-test encoder: deterministic, unit rows, colour words find their frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxsim.encoders import load_encoder
from maxsim.testing.color import PALETTE, ColorHistogramEncoder
from maxsim.types import Clip


def solid(rgb, n=3, noise=8, seed=0):
    rng = np.random.default_rng(seed)
    f = np.empty((n, 32, 48, 3), np.int16)
    f[:] = rgb
    return np.clip(f + rng.integers(-noise, noise + 1, f.shape), 0, 255).astype(np.uint8)


def test_registered_and_deterministic():
    enc = load_encoder("color-test")
    assert isinstance(enc, ColorHistogramEncoder) and enc.name == "color-test" and enc.dim == 32
    clip = Clip("v.mp4", 0.0, 1.0, solid(PALETTE["teal"]), np.arange(3) / 2)
    a, b = enc.encode_clips([clip])[0], load_encoder("color-test").encode_clips([clip])[0]
    assert torch.equal(a, b)
    assert a.shape == (3, 32)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)


def test_every_palette_colour_query_prefers_its_frames():
    enc = ColorHistogramEncoder(dim=24, grid=2)
    names = list(PALETTE)
    clips = [Clip("v", i, i + 1, solid(PALETTE[n], seed=i), np.zeros(3)) for i, n in enumerate(names)]
    toks = enc.encode_clips(clips)
    assert all(t.shape == (3 * 4, 24) for t in toks)  # 2x2 cells per frame
    queries = enc.encode_texts([f"the {n} part" for n in names])
    scores = torch.tensor([[float((q @ t.T).max(1).values.sum()) for t in toks] for q in queries])
    assert torch.equal(scores.argmax(1), torch.arange(len(names)))


def test_texts():
    enc = ColorHistogramEncoder()
    assert enc.colour_words("A Gray sky over RED, red and violet!") == ["grey", "red", "red", "purple"]
    toks = enc.encode_texts(["red and blue", "nothing here"])
    assert toks[0].shape == (2, enc.dim) and toks[1].shape == (1, enc.dim)
    assert float(toks[0][0] @ toks[0][1]) == pytest.approx(0.0, abs=1e-6)  # distinct colours are orthogonal


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim >= 18"):
        ColorHistogramEncoder(dim=8)
    with pytest.raises(ValueError, match="frames must be"):
        ColorHistogramEncoder().encode_clips([Clip("v", 0, 1, np.zeros((2, 4, 4)), np.zeros(2))])
