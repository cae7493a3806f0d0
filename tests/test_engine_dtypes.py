"""Quantised storage end to end: int8 and fp8 (e4m3) token matrices with float32 scales per token."""

import pytest
import torch

from maxsim import Engine, kernels
from maxsim.cli import main
from maxsim.index import storage_dtype
from maxsim.testing.synthetic import write_video
from tests.color_encoder import ColorEncoder

# max |score - float32 score| relative to the largest float32 score. kernels/quantize.py measures 1.7e-3
# (int8) and 7e-3 (fp8) on 128-d unit vectors; here (9-d colour vectors, one-hot query tokens, sums of up
# to 4 of them) int8 measures 6.3e-3 (half an int8 step of the row's absmax per query token) and fp8 8e-4.
TOLERANCE = {"int8": 1e-2, "float8_e4m3fn": 1e-2}
QUERIES = ["red", "blue green", "yellow magenta", "red cyan white"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return [
        write_video(d / "a.mp4", [(2.0, "red"), (2.0, "blue"), (2.0, "green")], seed=1),
        write_video(d / "b.mp4", [(2.0, "yellow"), (2.0, "red"), (2.0, "magenta")], seed=2),
        write_video(d / "c.mp4", [(2.0, "cyan"), (2.0, "white")], seed=3),
    ]


def build(root, dtype, videos):
    eng = Engine(root, encoder=ColorEncoder(), dtype=dtype, segmenter="fixed:1")
    assert eng.ingest(videos, progress=False).ok
    return eng


def by_key(eng, **kw):
    qs = ColorEncoder().encode_texts(QUERIES)
    out = {}
    for qi, hits in enumerate(eng.search_vectors(qs, k=len(eng), **kw)):
        for h in hits:
            out[(qi, h.video, h.start)] = (h.score, h.best_time)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, videos):
    return by_key(build(tmp_path_factory.mktemp("f32") / "idx", "float32", videos))


@pytest.mark.parametrize("dtype", ["int8", "float8_e4m3fn"])
def test_quantised_index_scores_like_float32(tmp_path, videos, reference, dtype, monkeypatch, capsys):
    eng = build(tmp_path / "idx", dtype, videos)
    ch = eng.snapshot.chunks[0]
    assert ch.tokens.dtype == {"int8": torch.int8, "float8_e4m3fn": torch.float8_e4m3fn}[dtype]
    assert ch.scales.dtype == torch.float32 and ch.scales.shape == (ch.tokens.shape[0],)

    seen = []
    real = kernels.maxsim_topk

    def topk(q, q_off, d, d_off, k, **kw):  # scored on the stored bytes, never a dequantised copy
        seen.append((d.dtype, kw.get("d_scale") is not None))
        return real(q, q_off, d, d_off, k, **kw)

    monkeypatch.setattr(kernels, "maxsim_topk", topk)
    got = by_key(eng)
    assert seen and all(s == (ch.tokens.dtype, True) for s in seen)
    top = max(abs(s) for s, _ in reference.values())
    best_of = {qi: max(s for (q, _, _), (s, _) in reference.items() if q == qi) for qi in range(len(QUERIES))}
    assert got.keys() == reference.keys()
    relevant = same_best = 0
    for key, (score, best) in reference.items():
        assert got[key][0] == pytest.approx(score, abs=TOLERANCE[dtype] * top), key
        if score >= 0.5 * best_of[key[0]]:  # segments that match: the best frame is found on scaled tokens
            relevant += 1
            same_best += got[key][1] == best
    assert relevant >= 8 and same_best == relevant
    # the filtered path gathers the allowed segments' rows and their scales
    a = str(videos[0].resolve())
    only_a = by_key(eng, videos=[a])
    assert only_a and all(v == a for _, v, _ in only_a)
    assert all(only_a[key][0] == pytest.approx(got[key][0], abs=1e-6) for key in only_a)
    qs = ColorEncoder().encode_texts(QUERIES)
    for qi, hits in enumerate(eng.search_vectors(qs, k=2, videos=[a])):  # most rows excluded: gathered
        want = sorted(((k, v[0]) for k, v in only_a.items() if k[0] == qi), key=lambda kv: -kv[1])[:2]
        assert [h.score for h in hits] == pytest.approx([w for _, w in want], abs=1e-6)

    reopened = Engine(tmp_path / "idx")
    assert reopened.manifest.dtype == dtype and by_key(reopened) == got

    # compaction carries bytes and scales unchanged
    before = {int(reopened.snapshot.segment_ids[r]): reopened.snapshot.segment_data(r)
              for r in range(len(reopened.snapshot.segment_ids))}
    before = {i: (d.clone(), s.clone()) for i, (d, s) in before.items()}
    eng.delete(videos[1])
    rep = eng.compact(full=True)
    assert rep.segments_dropped == 6 and len(eng.manifest.parts) == 1
    snap = eng.snapshot
    for r in range(len(snap.segment_ids)):
        d, s = snap.segment_data(r)
        want_d, want_s = before[int(snap.segment_ids[r])]
        assert torch.equal(d.view(torch.uint8), want_d.view(torch.uint8)) and torch.equal(s, want_s)
    after = by_key(eng)
    assert after == {k: v for k, v in got.items() if k[1] != str(videos[1].resolve())}

    assert main(["info", str(tmp_path / "idx")]) == 0
    assert f"dtype: {dtype}" in capsys.readouterr().out


def test_quantised_tokens_take_about_half_the_bytes(tmp_path, videos):
    sizes = {}
    for dtype in ("float16", "int8", "fp8"):
        eng = build(tmp_path / dtype, dtype, videos[:1])
        assert eng.manifest.dtype == storage_dtype(dtype)
        part = eng.manifest.parts[0]
        sizes[dtype] = (tmp_path / dtype / part["tokens"]).stat().st_size
        dim = eng.manifest.dim
        per_token = {"float16": 2 * dim, "int8": dim + 4, "fp8": dim + 4}[dtype]
        assert part["token_bytes"] == part["n_tokens"] * per_token
    assert sizes["int8"] < sizes["float16"] and sizes["fp8"] < sizes["float16"]


def test_cli_ingest_dtype(tmp_path, videos, capsys):
    idx = tmp_path / "idx"
    enc = "tests.color_encoder:ColorEncoder"
    assert main(["ingest", str(idx), str(videos[2]), "--encoder", enc, "--dtype", "fp8", "-q"]) == 0
    assert Engine(idx).manifest.dtype == "float8_e4m3fn"
    with pytest.raises(SystemExit):
        main(["ingest", str(tmp_path / "x"), str(videos[2]), "--encoder", enc, "--dtype", "int4"])
    assert "int4" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown storage dtype 'int4'"):
        Engine(tmp_path / "y", encoder=ColorEncoder(), dtype="int4")
