"""Search on the device path: the Triton kernel (in the interpreter, on CPU tensors standing for the GPU)
and torch over a placed corpus, through Engine.search, the HTTP service and ShardedSearch, give the hits of
the CPU path, for every storage dtype, with filters, deletes, refreshes, streaming, several devices and
pruned search; a refresh after one new video uploads one part."""

from __future__ import annotations

import os

import pytest
from maxsim.kernels import triton_maxsim

from maxsim import Engine, SearchOptions
from maxsim.testing.synthetic import write_video
from tests.random_encoder import RandomEncoder

# cpu: CPU tensors stand for the GPU (Triton in the interpreter); bench/gpu_run.sh sets cuda on a GPU machine
DEV = os.environ.get("MAXSIM_TEST_DEVICE", "cpu")
WORDS = ["a red car", "two dogs", "sunset over water", "x"]
TOL = {"float32": 1e-4, "float16": 2e-3, "bfloat16": 1e-2, "int8": 1e-2, "float8_e4m3fn": 3e-2}


def _videos(root, n=4, seconds=4.0):
    paths = []
    for i in range(n):
        paths.append(write_video(root / f"v{i}.mp4", [(seconds / 2, "red"), (seconds / 2, "blue")], fps=5))
    return paths


@pytest.fixture(scope="module", params=list(TOL))
def index(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"dev-{request.param}")
    vids = _videos(root)
    eng = Engine(root / "idx", encoder=RandomEncoder(), dtype=request.param, segmenter="fixed:0.5")
    eng.ingest(vids[:2], progress=False)
    eng.ingest(vids[2:], progress=False)  # two parts
    return root, vids, request.param


def _rows(hits):
    return [h.segment_id for h in hits]


def _same(a, b, tol):
    """Same hits up to the storage dtype's rounding: scores rank by rank within ``tol``, the same segments
    (two whose scores are within ``tol`` may swap places, and one within ``tol`` of the last may trade
    places with another there), each with the same metadata."""
    assert len(a) == len(b)
    close = [abs(x.score - y.score) <= tol * max(1.0, abs(y.score)) for x, y in zip(a, b, strict=True)]
    assert all(close), [(x.score, y.score) for x, y in zip(a, b, strict=True)]
    other = {h.segment_id: h for h in b}
    for x in a:
        y = other.get(x.segment_id)
        if y is None:
            assert abs(x.score - b[-1].score) <= 2 * tol * max(1.0, abs(x.score)), (x, b)
        else:
            assert (x.video, x.start, x.end, x.segment_id) == (y.video, y.start, y.end, y.segment_id)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_engine_search_on_the_device_path_gives_the_cpu_hits(index, backend, monkeypatch):
    root, vids, dtype = index
    host = Engine(root / "idx", encoder=RandomEncoder())
    dev = Engine(root / "idx", encoder=RandomEncoder(), device=DEV, search_backend=backend)
    launches = []
    real = triton_maxsim.launch
    monkeypatch.setattr(triton_maxsim, "launch", lambda *a, **k: launches.append(1) or real(*a, **k))
    for w in WORDS:
        _same(dev.search(w, k=6), host.search(w, k=6), TOL[dtype])
    filters = {"videos": [str(vids[1]), str(vids[3])], "time_range": (0.6, 3.0)}
    for w in WORDS[:2]:
        _same(dev.search(w, k=5, **filters), host.search(w, k=5, **filters), TOL[dtype])
    assert dev.search_batch(WORDS, k=3) and len(dev.search("x", k=1000)) == len(host)
    result = dev.query("a red car", k=2)
    assert result.stats.backend == backend and result.stats.placement["path"] == "resident"
    assert (len(launches) > 0) == (backend == "triton")  # the Triton kernel ran (once per group and batch)


def test_refresh_uploads_only_the_new_part_and_a_delete_uploads_nothing(tmp_path):
    vids = _videos(tmp_path, n=3)
    writer = Engine(tmp_path / "idx", encoder=RandomEncoder(), segmenter="fixed:1")
    writer.ingest(vids[:2], progress=False)
    dev = Engine(tmp_path / "idx", encoder=RandomEncoder(), device=DEV, search_backend="triton")
    assert dev.searcher.corpus.stats()["uploads"] == 1
    writer.ingest(vids[2], progress=False)
    dev.refresh()
    st = dev.searcher.corpus.stats()
    assert (st["uploads"], st["reused_parts"], st["resident_parts"]) == (1, 1, 2)
    writer.delete(vids[0])
    dev.refresh()
    st = dev.searcher.corpus.stats()
    assert (st["uploads"], st["uploaded_bytes"]) == (0, 0)  # deleted rows are a device mask
    host = Engine(tmp_path / "idx", encoder=RandomEncoder())
    for w in WORDS:
        _same(dev.search(w, k=4), host.search(w, k=4), 2e-3)
    assert all(h.video != str(vids[0].resolve()) for h in dev.search("a red car", k=100))
    writer.compact(full=True)  # the surviving parts are cut out of their groups on the device
    dev.refresh()
    assert dev.searcher.corpus.stats()["uploads"] == 1  # the compacted part is a new part
    fresh = Engine(tmp_path / "idx", encoder=RandomEncoder())
    _same(dev.search("two dogs", k=5), fresh.search("two dogs", k=5), 2e-3)


@pytest.mark.parametrize("budget", [1, 0.5])
def test_parts_beyond_the_budget_are_streamed(index, budget):
    root, _, dtype = index
    host = Engine(root / "idx", encoder=RandomEncoder())
    if isinstance(budget, float):
        with pytest.raises(ValueError, match="fraction"):  # a fraction needs a GPU to take it of
            Engine(root / "idx", encoder=RandomEncoder(), device=DEV, search_backend="torch",
                   device_memory=1.5)
        budget = host.manifest.parts[0]["token_bytes"] + 100  # room for one part
    dev = Engine(root / "idx", encoder=RandomEncoder(), device=DEV, search_backend="torch",
                 device_memory=budget)
    st = dev.searcher.corpus.stats()
    assert st["streamed_parts"] >= 1 and st["path"] in ("stream", "resident+stream")
    for w in WORDS:
        _same(dev.search(w, k=6), host.search(w, k=6), TOL[dtype])
    assert dev.searcher.corpus.stager.chunks > 0


def test_several_devices_share_the_parts(index):
    root, _, dtype = index
    host = Engine(root / "idx", encoder=RandomEncoder())
    dev = Engine(root / "idx", encoder=RandomEncoder(), device=DEV, search_backend="torch",
                 devices=[DEV, DEV])
    assert dev.searcher.corpus.stats()["groups"] == 2
    for w in WORDS:
        _same(dev.search(w, k=6), host.search(w, k=6), TOL[dtype])


def test_pruned_search_on_the_device_matches_the_cpu_path(tmp_path):
    vids = _videos(tmp_path, n=6, seconds=6.0)
    eng = Engine(tmp_path / "idx", encoder=RandomEncoder(), segmenter="fixed:0.5")
    eng.ingest(vids, progress=False)
    eng.build_prune_index(progress=False, n_centroids=16)
    dev = Engine(tmp_path / "idx", encoder=RandomEncoder(), device=DEV, search_backend="triton")
    for w in WORDS:
        for opts in ({"n_candidates": 8, "n_refine": 0, "nprobe": 2}, {"n_candidates": 10, "n_refine": 30}):
            a = dev.query(w, k=4, mode="pruned", **opts)
            b = eng.query(w, k=4, mode="pruned", **opts)
            _same(a.hits, b.hits, 2e-3)
            assert a.stats.prune.candidates == b.stats.prune.candidates
            assert a.stats.prune.refined == b.stats.prune.refined
    filtered = dev.search("a red car", k=3, mode="pruned", n_candidates=5, videos=[str(vids[2])])
    assert filtered and all(h.video == str(vids[2].resolve()) for h in filtered)


def test_bad_device_settings_are_clear(tmp_path):
    Engine(tmp_path / "idx", encoder=RandomEncoder())
    with pytest.raises(ValueError, match="not a device"):
        Engine(tmp_path / "idx", device="gpu0")
    with pytest.raises(ValueError, match="backend must be one of"):
        Engine(tmp_path / "idx", device="cpu", search_backend="fast")
    with pytest.raises(ValueError, match="device_memory"):
        Engine(tmp_path / "idx", device="cpu", search_backend="torch", device_memory=-1)
    assert Engine(tmp_path / "idx").searcher.backend in ("cpu", "triton")  # auto: CPU here, Triton on a GPU


def test_the_http_service_searches_on_the_device_path(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from maxsim.server import create_app

    vids = _videos(tmp_path, n=3)
    Engine(tmp_path / "idx", encoder=RandomEncoder(), segmenter="fixed:1").ingest(vids, progress=False)
    host = Engine(tmp_path / "idx", encoder=RandomEncoder())
    dev = Engine(tmp_path / "idx", encoder=RandomEncoder(), device=DEV, search_backend="triton")
    with TestClient(create_app(dev)) as c:
        health = c.get("/healthz").json()
        assert health["search"]["backend"] == "triton" and health["search"]["path"] == "resident"
        for w in WORDS:
            got = c.post("/search", json={"text": w, "k": 4}).json()["hits"]
            assert [h["segment_id"] for h in got] == [h.segment_id for h in host.search(w, k=4)]
        batch = c.post("/search", json={"texts": WORDS, "k": 2, "videos": [str(vids[0])]}).json()["results"]
        assert [[h["segment_id"] for h in r] for r in batch] == [
            [h.segment_id for h in hits] for hits in host.search_batch(WORDS, k=2, videos=[str(vids[0])])]


def test_sharded_search_runs_each_shard_on_the_device_path(tmp_path):
    pytest.importorskip("ray")
    from maxsim import distributed

    vids = _videos(tmp_path, n=4)
    w = Engine(tmp_path / "idx", encoder=RandomEncoder(), segmenter="fixed:1")
    for v in vids:
        w.ingest(v, progress=False)  # four parts
    host = Engine(tmp_path / "idx", encoder=RandomEncoder())
    dev = Engine(tmp_path / "idx", encoder=RandomEncoder(), device=DEV, search_backend="triton")
    distributed.init(num_cpus=2)
    shards = distributed.ShardedSearch(dev, n_shards=2)
    try:
        results = shards.query_vectors(dev.encoder.encode_texts(WORDS), SearchOptions(k=3))
        for word, r in zip(WORDS, results, strict=True):
            assert [h.segment_id for h in r.hits] == [h.segment_id for h in host.search(word, k=3)]
            assert r.stats.backend == "triton" and r.stats.segments == len(host)
    finally:
        shards.close()


def test_the_retrievers_search_on_the_device_path(tmp_path, monkeypatch):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from maxsim.integrations.langchain import MaxSimRetriever as LCRetriever
    from maxsim.integrations.llamaindex import MaxSimRetriever as LIRetriever

    vids = _videos(tmp_path, n=3)
    Engine(tmp_path / "idx", encoder=RandomEncoder(), segmenter="fixed:1").ingest(vids, progress=False)
    host = Engine(tmp_path / "idx", encoder=RandomEncoder())
    dev = Engine(tmp_path / "idx", encoder=RandomEncoder(), device=DEV, search_backend="triton")
    launches = []
    real = triton_maxsim.launch
    monkeypatch.setattr(triton_maxsim, "launch", lambda *a, **k: launches.append(1) or real(*a, **k))
    for w in WORDS:
        want = [h.segment_id for h in host.search(w, k=3)]
        docs = LCRetriever(engine=dev, k=3, include_thumbnail=False).invoke(w)
        assert [d.metadata["segment_id"] for d in docs] == want
        nodes = LIRetriever(engine=dev, k=3).retrieve(w)
        assert [n.node.metadata["segment_id"] for n in nodes] == want
    assert launches  # both went through the Triton kernel
