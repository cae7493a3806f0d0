"""Pruned search (token centroids + exact re-rank): agreement with exhaustive search, incremental parts,
deletions, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from maxsim.kernels import merge_topk

from maxsim import kernels
from maxsim.errors import IndexFormatError
from maxsim.index import SegmentRecord, Store
from maxsim.search.prune.build import build_part_index, update_prune_index
from maxsim.search.prune.files import PRUNE_DIR, read_prune_manifest
from maxsim.search.prune.kmeans import spherical_kmeans
from maxsim.search.prune.searcher import PrunedSearcher
from maxsim.testing.tokens import CorpusSpec, SyntheticCorpus

SPEC = CorpusSpec(n_segments=1200, frames=4, tokens_per_frame=4, dim=32, n_concepts=256,
                  segments_per_video=30, seed=3)


def _add_part(store: Store, tokens: torch.Tensor, first_id: int, video_of=lambda i: f"v{i // 30}") -> None:
    with store.writing():
        base = store.manifest()
        w = store.new_part()
        for i in range(tokens.shape[0]):
            w.add(first_id + i, SegmentRecord(video_of(first_id + i), "h", "s", 0.0, 1.0,
                                              [0.0, 0.25, 0.5, 0.75], None, tokens[i]))
        part = w.close()
        store.commit(base, [part], next_segment_id=first_id + tokens.shape[0])


def _delete(store: Store, ids: list[int]) -> None:
    with store.writing():
        store.commit(store.manifest(), deleted=ids, op="delete")


def _exact(snap, q, q_off, k, allowed=None):
    allowed = snap.live if allowed is None else allowed
    ss, rr = [], []
    for ch in snap.chunks:
        ok = allowed[ch.rows]
        s = kernels.maxsim_scores(q, q_off, ch.tokens, ch.offsets)
        s[:, torch.from_numpy(~ok)] = float("-inf")
        ss.append(s)
        rr.append(torch.from_numpy(ch.rows).expand(s.shape[0], -1))
    s, r = merge_topk(torch.cat(ss, 1), torch.cat(rr, 1), k)
    return s, torch.where(torch.isfinite(s), r, torch.tensor(-1))


def _queries(corpus: SyntheticCorpus, tokens: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    qs = [corpus.query(tokens[t], n_tokens=16, n_match=8, seed=int(t)) for t in targets]
    off = torch.zeros(len(qs) + 1, dtype=torch.int64)
    off[1:] = torch.cumsum(torch.tensor([x.shape[0] for x in qs]), 0)
    return torch.cat(qs), off


def psearch(searcher, *args, **kwargs):
    """A pruned search with its per-query statistics summed."""
    s, r, stats = searcher.search(*args, **kwargs)
    return s, r, sum(stats[1:], stats[0])


@pytest.fixture(scope="module")
def corpus():
    c = SyntheticCorpus(SPEC)
    return c, c.block(0, SPEC.n_segments)


def _store(tmp_path, tokens, n_parts=1) -> Store:
    store = Store.create(tmp_path / "idx", {"name": "synthetic", "dim": SPEC.dim}, SPEC.dim)
    bounds = np.linspace(0, tokens.shape[0], n_parts + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        _add_part(store, tokens[lo:hi], int(lo))
    return store


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    x = centers.repeat_interleave(50, 0) + 0.05 * torch.randn(400, 16, generator=g)
    c = spherical_kmeans(x, 8, iters=10)
    assert c.shape == (8, 16)
    assert torch.allclose(c.norm(dim=1), torch.ones(8), atol=1e-5)
    # every true centre has a learned centroid close to it
    assert float((centers @ c.T).max(1).values.min()) > 0.95


def test_inverted_lists_and_bags_agree(corpus):
    _, tokens = corpus
    t = tokens[:100].reshape(-1, SPEC.dim)
    off = torch.arange(0, t.shape[0] + 1, SPEC.tokens_per_segment)
    idx = build_part_index("p", [(t, off, np.arange(100))], 100, n_centroids=32)
    lo, bo = idx.list_offsets, idx.bag_offsets
    pairs_lists = {(c, int(r)) for c in range(32) for r in idx.list_rows[lo[c]:lo[c + 1]]}
    pairs_bags = {(int(c), s) for s in range(100) for c in idx.bag_codes[bo[s]:bo[s + 1]]}
    assert pairs_lists == pairs_bags
    assert all(idx.bag_offsets[s + 1] > idx.bag_offsets[s] for s in range(100))  # every segment listed


def test_pruned_finds_exact_top1_and_exact_scores(tmp_path, corpus):
    c, tokens = corpus
    store = _store(tmp_path, tokens)
    snap = store.snapshot()
    with store.writing():
        assert len(update_prune_index(snap)) == 1
    targets = np.random.default_rng(0).choice(SPEC.n_segments, 20, replace=False)
    q, q_off = _queries(c, tokens, targets)
    es, er = _exact(snap, q, q_off, 10)
    ps = PrunedSearcher(snap)
    assert ps.covered
    s, r, stats = psearch(ps, q, q_off, snap.live, 10, n_candidates=60, nprobe=4)
    assert stats.candidates == 60 * len(targets)  # the candidate path ran, not a full scan
    assert stats.fraction < 0.25
    assert torch.equal(r[:, 0], er[:, 0])
    assert (r[:, 0].numpy() == targets).all()
    # returned scores are exact MaxSim scores of the returned rows
    for i in range(len(targets)):
        for j in range(10):
            row = int(r[i, j])
            d = snap.segment_tokens(row)
            ref = kernels.maxsim_scores(q[q_off[i]:q_off[i + 1]], torch.tensor([0, q_off[i + 1] - q_off[i]]),
                                        d, torch.tensor([0, d.shape[0]]))[0, 0]
            assert float(s[i, j]) == pytest.approx(float(ref), abs=1e-5)
    def recall(r):
        return np.mean([len(set(r[i].tolist()) & set(er[i].tolist())) / 10 for i in range(len(targets))])

    _, r_wide, _ = psearch(ps, q, q_off, snap.live, 10, n_candidates=240, nprobe=8)
    print("recall@10", recall(r), recall(r_wide))
    assert recall(r_wide) >= 0.97
    assert recall(r_wide) >= recall(r) >= 0.6


def test_enough_candidates_equals_exhaustive(tmp_path, corpus):
    c, tokens = corpus
    store = _store(tmp_path, tokens[:300], n_parts=2)
    snap = store.snapshot()
    with store.writing():
        update_prune_index(snap)
    q, q_off = _queries(c, tokens, [3, 150, 299])
    es, er = _exact(snap, q, q_off, 5)
    s, r, _ = psearch(PrunedSearcher(snap), q, q_off, snap.live, 5, n_candidates=300, nprobe=2)
    assert torch.equal(r, er)
    assert torch.allclose(s, es)


def test_incremental_parts_deletes_and_persistence(tmp_path, corpus):
    c, tokens = corpus
    store = _store(tmp_path, tokens[:600])
    with store.writing():
        first = update_prune_index(store.snapshot())
    man1 = read_prune_manifest(store.root)
    files1 = {p.name: p.stat().st_mtime_ns for p in (store.root / PRUNE_DIR).glob("*.npy")}
    _add_part(store, tokens[600:], 600)
    snap = store.snapshot()
    # a part without a prune index is searched exhaustively, so results stay exact
    q, q_off = _queries(c, tokens, [10, 700, 1100])
    es, er = _exact(snap, q, q_off, 5)
    ps = PrunedSearcher(snap)
    assert not ps.covered
    s, r, stats = ps.search(q, q_off, snap.live, 5, n_candidates=40, nprobe=4)
    assert [st.exhaustive_parts for st in stats] == [1, 1, 1]  # each query scanned the one new part
    assert torch.equal(r[:, 0], er[:, 0])
    with store.writing():
        second = update_prune_index(snap)
    assert len(second) == 1 and second != first  # only the new part was built
    man2 = read_prune_manifest(store.root)
    assert man2["parts"][first[0]] == man1["parts"][first[0]]
    for name, mtime in files1.items():  # the first part's files were not rewritten
        assert (store.root / PRUNE_DIR / name).stat().st_mtime_ns == mtime
    with store.writing():
        assert update_prune_index(snap) == []  # nothing to do
    # delete the first query's two best segments: the pruned search never returns them, the other
    # queries keep their exact top hit, and every query gets the exact ranking of its candidates
    gone = sorted(int(snap.segment_ids[int(x)]) for x in er[0, :2])
    _delete(store, gone)
    snap = store.snapshot()
    es, er = _exact(snap, q, q_off, 5)
    ps = PrunedSearcher(snap)
    s, r, _ = psearch(ps, q, q_off, snap.live, 5, n_candidates=40, nprobe=4)
    ids = {int(snap.segment_ids[int(x)]) for x in r.reshape(-1) if x >= 0}
    assert not ids & set(gone)
    assert torch.equal(r[1:, 0], er[1:, 0])
    for i in range(3):
        qi = q[q_off[i]:q_off[i + 1]]
        rows, _ = ps.candidates(qi, snap.live, 40, 4)
        assert rows.size == 40 and snap.live[rows].all()
        allowed = np.zeros_like(snap.live)
        allowed[rows] = True
        cs, cr = _exact(snap, qi, torch.tensor([0, qi.shape[0]]), 5, allowed)
        assert torch.equal(r[i], cr[0]) and torch.allclose(s[i], cs[0])
    # a filter (allowed mask) is respected the same way
    allowed = snap.live.copy()
    allowed[:600] = False
    s, r, _ = psearch(PrunedSearcher(snap), q, q_off, allowed, 5, n_candidates=40, nprobe=4)
    assert (r[r >= 0] >= 600).all()


def test_stale_entries_are_removed_and_damage_is_reported(tmp_path, corpus):
    _, tokens = corpus
    store = _store(tmp_path, tokens[:200])
    with store.writing():
        (pid,) = update_prune_index(store.snapshot())
    path = store.root / PRUNE_DIR / "manifest.json"
    data = json.loads(path.read_text())
    data["parts"]["p-gone"] = dict(data["parts"][pid])  # an entry of a part that left the index
    (store.root / PRUNE_DIR / "leftover.npy").write_bytes(b"x")  # a file of an interrupted build
    path.write_text(json.dumps(data))
    with store.writing():
        assert update_prune_index(store.snapshot()) == []
    data = read_prune_manifest(store.root)
    assert set(data["parts"]) == {pid}
    assert not (store.root / PRUNE_DIR / "leftover.npy").exists()
    for key in ("list_rows", "bag_codes"):
        (store.root / PRUNE_DIR / data["parts"][pid][key]).write_bytes(b"not npy")
        with pytest.raises(IndexFormatError, match="prune files"):
            PrunedSearcher(store.snapshot())
        break


def test_search_arguments_are_checked(tmp_path, corpus):
    c, tokens = corpus
    store = _store(tmp_path, tokens[:100])
    snap = store.snapshot()
    q, q_off = _queries(c, tokens, [1])
    ps = PrunedSearcher(snap)
    with pytest.raises(ValueError, match="n_candidates"):
        psearch(ps, q, q_off, snap.live, 10, n_candidates=5)
    with pytest.raises(ValueError, match="nprobe"):
        psearch(ps, q, q_off, snap.live, 10, n_candidates=50, nprobe=0)


# -- through the engine and the CLI ------------------------------------------------------------------------
def test_engine_pruned_mode_follows_ingest_delete_compact(tmp_path, capsys):
    from maxsim.cli import main
    from maxsim.engine import Engine
    from maxsim.testing.synthetic import write_video

    scenes = [[(2.0, "red"), (2.0, "blue")], [(2.0, "green"), (2.0, "yellow")],
              [(2.0, "white"), (2.0, "red")], [(2.0, "orange"), (2.0, "black")]]
    for i, sc in enumerate(scenes):
        write_video(tmp_path / f"v{i}.mp4", sc, fps=10)
    eng = Engine(tmp_path / "idx", encoder="color-test", segmenter="fixed:1")
    eng.ingest([tmp_path / "v0.mp4", tmp_path / "v1.mp4"], progress=False)
    words = ["red", "blue", "green yellow", "white", "orange black"]

    def same(n_candidates=2):
        for w in words:
            exact = [h.to_dict() for h in eng.search(w, k=2)]
            pruned = [h.to_dict() for h in eng.search(w, k=2, mode="pruned", n_candidates=n_candidates)]
            assert pruned == exact, w

    def exhaustive_parts() -> int:
        return eng.query("red", k=2, mode="pruned", n_candidates=2).stats.prune.exhaustive_parts

    same()  # no prune index yet: every part is scanned
    assert exhaustive_parts() == 1
    assert len(eng.build_prune_index(progress=False)) == 1
    same()
    assert exhaustive_parts() == 0
    eng.ingest([tmp_path / "v2.mp4", tmp_path / "v3.mp4"], progress=False)  # the new part is indexed too
    assert set(read_prune_manifest(eng.path)["parts"]) == {p["id"] for p in eng.manifest.parts}
    same()
    assert exhaustive_parts() == 0
    eng.delete(tmp_path / "v2.mp4")
    same()
    hits = eng.search("white", k=8, mode="pruned", n_candidates=8)
    assert hits and all(not h.video.endswith("v2.mp4") for h in hits)
    eng.compact(full=True)
    assert len(eng.manifest.parts) == 1
    assert set(read_prune_manifest(eng.path)["parts"]) == {eng.manifest.parts[0]["id"]}
    same()
    with pytest.raises(ValueError, match="mode"):
        eng.search("red", mode="fast")
    # the CLI: build (nothing left to do) and search pruned
    assert main(["prune", str(eng.path), "-q"]) == 0
    assert main(["search", str(eng.path), "orange", "-k", "1", "--pruned", "--candidates", "2"]) == 0
    assert main(["search", str(eng.path), "orange", "-k", "1", "--pruned", "--candidates", "2",
                 "--refine", "4", "--nprobe", "2"]) == 0
    # info reports what the prune index covers, rebuilt with other settings on request
    capsys.readouterr()
    assert main(["info", str(eng.path), "--json"]) == 0
    pi = json.loads(capsys.readouterr().out)["prune_index"]
    assert pi["parts_covered"] == pi["parts"] == 1 and pi["residual_bits"] == [2] and pi["bytes"] > 0
    assert main(["prune", str(eng.path), "-q", "--rebuild", "--bits", "1"]) == 0
    assert main(["info", str(eng.path)]) == 0
    assert "prune index: 1 of 1 parts" in capsys.readouterr().out
    assert read_prune_manifest(eng.path)["params"]["nbits"] == 1
    same()
    assert main(["prune", str(eng.path), "-q", "--bits", "3"]) == 2


def test_quantized_storage(tmp_path, corpus):
    """int8 / fp8 indexes: centroids from dequantised tokens, exact re-rank with the stored scales."""
    c, tokens = corpus
    for dtype in ("int8", "float8_e4m3fn"):
        store = Store.create(tmp_path / dtype, {"name": "synthetic", "dim": SPEC.dim}, SPEC.dim, dtype)
        _add_part(store, tokens[:400], 0)
        snap = store.snapshot()
        assert snap.chunks[0].scales is not None
        with store.writing():
            update_prune_index(snap)
        q, q_off = _queries(c, tokens, [5, 200, 399])
        es, er = [], []
        for i in range(3):
            qi = q[q_off[i]:q_off[i + 1]]
            ch = snap.chunks[0]
            s, r = kernels.maxsim_topk(qi, torch.tensor([0, qi.shape[0]]), ch.tokens, ch.offsets, 5,
                                       d_scale=ch.scales)
            es.append(s[0])
            er.append(torch.from_numpy(ch.rows)[r[0]])
        s, r, stats = psearch(PrunedSearcher(snap), q, q_off, snap.live, 5, n_candidates=100, nprobe=4)
        assert stats.candidates == 300
        assert torch.equal(r[:, 0], torch.stack(er)[:, 0]), dtype
        assert torch.allclose(s[:, 0], torch.stack(es)[:, 0], atol=1e-5)
        # residual codes of dequantised tokens: the refine stage keeps the exact top hit
        s, r, stats = psearch(PrunedSearcher(snap), q, q_off, snap.live, 5, n_candidates=20, nprobe=4,
                                                  n_refine=200)
        assert stats.refined == 600 and stats.candidates == 60
        assert torch.equal(r[:, 0], torch.stack(er)[:, 0]), dtype
        assert torch.allclose(s[:, 0], torch.stack(es)[:, 0], atol=1e-5)


# -- residual codes and the refine stage --------------------------------------------------------------------
def test_residual_codes_follow_part_rows(corpus):
    """Chunks given out of row order still give per-row token codes; decoded tokens are close to the
    originals."""
    _, tokens = corpus
    t = tokens[:100]
    n_tok = SPEC.tokens_per_segment
    off = torch.arange(0, 50 * n_tok + 1, n_tok)
    chunks = [(t[50:].reshape(-1, SPEC.dim), off, np.arange(50, 100)),
              (t[:50].reshape(-1, SPEC.dim), off, np.arange(50))]
    idx = build_part_index("p", chunks, 100, n_centroids=32)
    assert idx.has_residuals and idx.codec.nbits == 2
    assert np.array_equal(idx.tok_offsets, np.arange(0, 100 * n_tok + 1, n_tok))
    dec = idx.centroids[torch.from_numpy(idx.token_codes.astype(np.int64))] + idx.codec.decode(idx.residuals)
    cos = torch.nn.functional.cosine_similarity(dec, t.reshape(-1, SPEC.dim).float())
    assert float(cos.mean()) > 0.85
    plain = torch.nn.functional.cosine_similarity(
        idx.centroids[torch.from_numpy(idx.token_codes.astype(np.int64))], t.reshape(-1, SPEC.dim).float())
    assert float(cos.mean()) > float(plain.mean()) + 0.05
    assert build_part_index("p", chunks, 100, n_centroids=32, nbits=None).residuals is None


def test_refine_stage_improves_recall_and_stays_exact(tmp_path, corpus):
    c, tokens = corpus
    store = _store(tmp_path, tokens, n_parts=2)
    snap = store.snapshot()
    with store.writing():
        update_prune_index(snap, n_centroids=64)
    targets = np.random.default_rng(5).choice(SPEC.n_segments, 16, replace=False)
    q, q_off = _queries(c, tokens, targets)
    es, er = _exact(snap, q, q_off, 10)
    ps = PrunedSearcher(snap)

    def recall(r):
        return np.mean([len(set(r[i].tolist()) & set(er[i].tolist())) / 10 for i in range(len(targets))])

    _, r_plain, st_plain = psearch(ps, q, q_off, snap.live, 10, n_candidates=100, nprobe=4)
    s, r, st = psearch(ps, q, q_off, snap.live, 10, n_candidates=100, nprobe=4, n_refine=600)
    assert st_plain.refined == 0 and st_plain.residual_bytes == 0
    assert st.refined == 600 * len(targets) and st.candidates == 100 * len(targets)
    assert st.residual_bytes == 600 * len(targets) * SPEC.tokens_per_segment * (SPEC.dim // 4 + 2)
    assert recall(r) >= 0.9 and recall(r) >= recall(r_plain) + 0.2
    assert torch.equal(r[:, 0], er[:, 0])
    for i in range(len(targets)):  # scores are exact MaxSim, ranked as exhaustive search ranks them
        qi = q[q_off[i]:q_off[i + 1]]
        allowed = np.zeros_like(snap.live)
        allowed[r[i].numpy()] = True
        cs, cr = _exact(snap, qi, torch.tensor([0, qi.shape[0]]), 10, allowed)
        assert torch.equal(r[i], cr[0]) and torch.allclose(s[i], cs[0])
    # refining every segment: the probe widens until the lists hold them all
    s, r, st = psearch(ps, q, q_off, snap.live, 10, n_candidates=200, nprobe=4, n_refine=SPEC.n_segments)
    assert st.refined == SPEC.n_segments * len(targets)
    assert recall(r) >= 0.97 and torch.equal(r[:, 0], er[:, 0])
    # deleted segments are never refined nor returned
    _delete(store, [int(snap.segment_ids[int(x)]) for x in er[:, 0]])
    snap = store.snapshot()
    _, r, _ = psearch(PrunedSearcher(snap), q, q_off, snap.live, 10, n_candidates=30, nprobe=4, n_refine=600)
    assert snap.live[r[r >= 0].numpy()].all()
    with pytest.raises(ValueError, match="n_refine"):
        psearch(ps, q, q_off, snap.live, 10, n_candidates=30, n_refine=-1)


def test_index_without_residual_codes_and_rebuild(tmp_path, corpus):
    c, tokens = corpus
    store = _store(tmp_path, tokens[:400])
    with store.writing():
        (pid,) = update_prune_index(store.snapshot(), nbits=None)
    path = store.root / PRUNE_DIR / "manifest.json"
    data = json.loads(path.read_text())
    assert "residuals" not in data["parts"][pid] and data["params"]["nbits"] is None
    data["format"] = 1  # as written before residual codes existed
    path.write_text(json.dumps(data))
    q, q_off = _queries(c, tokens, [7, 300])
    es, er = _exact(store.snapshot(), q, q_off, 5)
    s, r, st = psearch(PrunedSearcher(store.snapshot()), q, q_off, store.snapshot().live, 5, n_candidates=40,
                                                       n_refine=200)
    assert st.refined == 0 and torch.equal(r[:, 0], er[:, 0])  # no codes: bag scores pick the candidates
    with store.writing():
        assert update_prune_index(store.snapshot()) == []  # covered: nothing to build
        assert update_prune_index(store.snapshot(), rebuild=True) == [pid]
    data = read_prune_manifest(store.root)
    assert data["format"] == 2 and data["parts"][pid]["nbits"] == 2
    assert len(list((store.root / PRUNE_DIR).glob("*.npy"))) == 9  # the old part's files were removed
    s, r, st = psearch(PrunedSearcher(store.snapshot()), q, q_off, store.snapshot().live, 5, n_candidates=40,
                                                       n_refine=200)
    assert st.refined == 400 and torch.equal(r[:, 0], er[:, 0])
    # damaged residual files are reported, not read out of bounds
    e = data["parts"][pid]
    np.save(store.root / PRUNE_DIR / e["tok_offsets"], np.arange(401, dtype=np.int64) * 3)
    with pytest.raises(IndexFormatError, match="residual codes"):
        PrunedSearcher(store.snapshot())
    codes = np.load(store.root / PRUNE_DIR / e["token_codes"])
    np.save(store.root / PRUNE_DIR / e["tok_offsets"], np.arange(401, dtype=np.int64) * 16)
    codes[5] = 10_000
    np.save(store.root / PRUNE_DIR / e["token_codes"], codes)
    with pytest.raises(IndexFormatError, match="outside"):
        PrunedSearcher(store.snapshot())


def test_build_device_is_checked(tmp_path, corpus):
    from maxsim.cli import main
    from maxsim.search.prune.kmeans import build_device

    assert build_device(None) == torch.device("cpu") == build_device("cpu")
    with pytest.raises(ValueError, match="expected 'cpu' or a CUDA device"):
        build_device("mps")
    with pytest.raises(ValueError, match="not a device"):
        build_device("gpu please")
    _, tokens = corpus
    x = tokens[:50].reshape(-1, SPEC.dim)
    assert torch.equal(spherical_kmeans(x, 16, iters=2), spherical_kmeans(x, 16, iters=2, device="cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA device"):
            build_device("cuda")
        store = _store(tmp_path, tokens[:100])
        assert main(["prune", str(store.root), "-q", "--device", "cuda"]) == 2
        assert read_prune_manifest(store.root) is None  # refused before anything was written
