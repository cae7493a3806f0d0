"""The service under concurrency: batch caps, overload, the catalog off the event loop, version moves
that only go forward, and one encoder call at a time between searches and ingest jobs."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from maxsim.engine import Engine  # noqa: E402
from maxsim.index import read_manifest  # noqa: E402
from maxsim.search import SearchOptions, SearchResult, SearchStats  # noqa: E402
from maxsim.server import catalog as catalog_mod  # noqa: E402
from maxsim.server import create_app  # noqa: E402
from maxsim.server.batcher import Overloaded, SearchBatcher  # noqa: E402
from maxsim.server.catalog import Catalog, video_id  # noqa: E402
from maxsim.types import Hit  # noqa: E402
from tests.serve_data import TrackingEncoder, make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("conc"))


def _fake_results(texts, options):
    hits = [[Hit(t, float(i), float(i + 1), 1.0, i, 0.5) for i in range(options.k)] for t in texts]
    return [SearchResult(h, SearchStats()) for h in hits]


# -- the batcher: a hard cap on texts per engine call, and a bounded queue ------------------------------
def test_batches_never_exceed_max_texts():
    calls: list[int] = []

    def search_batch(texts, options):
        calls.append(len(texts))
        time.sleep(0.01)  # busy: requests pile up behind the running batch
        return _fake_results(texts, options)

    async def go():
        b = SearchBatcher(search_batch, ThreadPoolExecutor(1), max_texts=8, window_ms=20)
        sizes = [3, 3, 3, 5, 1, 8, 2, 7, 3, 3, 4, 4, 6, 1, 1, 2] * 2
        reqs = [[f"q{i}-{j}" for j in range(n)] for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(b.search(r, SearchOptions(k=1)) for r in reqs))
        with pytest.raises(ValueError, match="9 texts is more than this server's limit of 8"):
            await b.search([f"x{j}" for j in range(9)], SearchOptions(k=1))
        await b.close()
        return reqs, results

    reqs, results = asyncio.run(go())
    assert calls and max(calls) <= 8, calls  # a 3+3+3 batch (9 texts) was possible before the cap
    assert sum(calls) == sum(len(r) for r in reqs) and len(calls) < len(reqs)
    for texts, res in zip(reqs, results, strict=True):  # each request still gets its own hits
        assert [r.hits[0].video for r in res] == texts


def test_a_full_queue_is_refused_at_once_and_the_rest_are_answered():
    entered, release = threading.Event(), threading.Event()

    def search_batch(texts, options):
        entered.set()
        release.wait(10)
        return _fake_results(texts, options)

    async def go():
        b = SearchBatcher(search_batch, ThreadPoolExecutor(1), max_texts=4, window_ms=0, max_queue=2)
        one = SearchOptions(k=1)
        first = asyncio.ensure_future(b.search(["a"], one))
        while not entered.is_set():  # the engine holds the first request: the next ones wait in the queue
            await asyncio.sleep(0.005)
        waiting = [asyncio.ensure_future(b.search([t], one)) for t in ("b", "c")]
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        with pytest.raises(Overloaded) as err:
            await b.search(["d"], one)
        refused_in = time.monotonic() - t0
        release.set()
        answers = await asyncio.gather(first, *waiting)
        await b.close()
        return err.value, refused_in, answers, b.stats.to_dict()

    err, refused_in, answers, stats = asyncio.run(go())
    assert refused_in < 0.5 and err.retry_after_s >= 1 and "2 searches are already waiting" in str(err)
    assert [a[0].hits[0].video for a in answers] == ["a", "b", "c"]
    assert stats["rejected"] == 1 and stats["requests"] == 3


def test_overload_is_a_503_with_retry_after(corpus):
    engine = corpus.engine()
    entered, release = threading.Event(), threading.Event()
    real = engine.query_batch

    def blocking(texts, options=None, **kw):
        entered.set()
        release.wait(10)
        return real(texts, options, **kw)

    engine.query_batch = blocking
    app = create_app(engine, max_queue=1, batch_window_ms=0)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = asyncio.ensure_future(c.post("/search", json={"text": "red"}))
            while not entered.is_set():
                await asyncio.sleep(0.005)
            second = asyncio.ensure_future(c.post("/search", json={"text": "blue"}))
            await asyncio.sleep(0.05)  # queued behind the running batch: the queue is full
            third = await c.post("/search", json={"text": "green"})
            release.set()
            return third, await first, await second, (await c.get("/healthz")).json()

    third, first, second, health = asyncio.run(go())
    assert third.status_code == 503, third.text
    assert int(third.headers["retry-after"]) >= 1 and "overloaded" in third.json()["detail"]
    assert first.status_code == 200 and second.status_code == 200
    assert second.json()["hits"][0]["start"] == 4.0  # blue: a.webm 4-8 s
    assert health["batching"]["rejected"] == 1
    with pytest.raises(ValueError, match="max_queue"):
        create_app(corpus.engine(), max_queue=0)


# -- the catalog: the engine's own snapshot, built once per version, never on the event loop ------------
def test_catalog_reuses_the_engines_snapshot_once_per_version(corpus, monkeypatch):
    engine = corpus.engine()
    builds = []
    real_build = catalog_mod._build
    monkeypatch.setattr(catalog_mod, "_build", lambda snap: builds.append(snap) or real_build(snap))
    cat = Catalog(engine)
    for _ in range(3):
        assert {e.name for e in cat.videos()} == {"a.webm", "b.webm"}
    assert len(builds) == 1 and builds[0] is engine.snapshot  # no second mapping of the index
    a = cat.by_path(corpus.videos["a.webm"])
    assert (a.segments, a.indexed_until, a.id) == (3, 12.0, video_id(corpus.videos["a.webm"]))
    assert cat.thumbnail(0)[:3] == b"\xff\xd8\xff"
    with pytest.raises(KeyError):
        cat.thumbnail(10**6)


def test_catalog_follows_deletes_and_reingests(tmp_path):
    corpus = make_corpus(tmp_path)
    engine = corpus.engine()
    cat = Catalog(engine)
    assert cat.by_path(corpus.videos["b.webm"]).segments == 2
    engine.delete(corpus.videos["b.webm"])
    assert cat.by_path(corpus.videos["b.webm"]) is None and [e.name for e in cat.videos()] == ["a.webm"]
    engine.ingest([corpus.videos["b.webm"]], progress=False)  # new segment ids, after a.webm's
    b = cat.by_path(corpus.videos["b.webm"])
    assert (b.segments, b.indexed_until) == (2, 8.0)
    assert cat.get(b.id) is b and cat.resolve(corpus.videos["b.webm"]) is b


def test_async_routes_never_touch_the_catalog_on_the_event_loop(corpus, monkeypatch):
    loop_threads: set[int] = set()
    seen: list[tuple[str, int]] = []
    for name in ("resolve", "get", "_current"):
        real = getattr(Catalog, name)

        def spy(self, *a, _real=real, _name=name):
            seen.append((_name, threading.get_ident()))
            return _real(self, *a)

        monkeypatch.setattr(Catalog, name, spy)
    app = create_app(corpus.engine())
    ids = {n: video_id(p) for n, p in corpus.videos.items()}

    async def go():
        loop_threads.add(threading.get_ident())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post("/search", json={"text": "red", "videos": [ids["b.webm"]]})
            assert {h["video_name"] for h in r.json()["hits"]} == {"b.webm"}
            r = await c.delete(f"/videos/{'0' * 16}")
            assert r.status_code == 404

    asyncio.run(go())
    assert {n for n, _ in seen} >= {"resolve", "get", "_current"}
    assert not [n for n, t in seen if t in loop_threads], seen


# -- versions only move forward; one encoder call at a time --------------------------------------------
def _wait_job(c, url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while (job := c.get(url).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


def test_searches_and_an_ingest_job_never_use_the_encoder_at_once(tmp_path):
    corpus = make_corpus(tmp_path, extra={"c.webm": [(4.0, "magenta"), (4.0, "cyan")] * 3})
    enc = TrackingEncoder(delay_s=0.15)
    engine = Engine(corpus.index, encoder=enc, segmenter="fixed:4", batch_size=2)
    app = create_app(engine, ingest_root=corpus.root)
    with TestClient(app) as c:
        job_url = c.post("/ingest", json={"paths": ["c.webm"]}).json()["status_url"]
        n = 0
        while c.get(job_url).json()["status"] in ("queued", "running"):
            assert c.post("/search", json={"text": "red", "k": 1}).status_code == 200
            n += 1
        job = _wait_job(c, job_url)
    assert job["status"] == "done" and job["segments"] == 6, job
    assert n >= 3 and enc.calls > n  # searches did run while the job encoded its three batches
    assert enc.overlaps == 0


def test_the_open_version_never_moves_back(tmp_path):
    """A refresh that read version N is slow to open it; meanwhile an ingest job commits N+1. Before,
    the refresh then put the engine back at N; now the job waits for it, and the engine ends at N+1."""
    corpus = make_corpus(tmp_path, extra={"c.webm": [(4.0, "magenta"), (4.0, "cyan")]})
    engine = corpus.engine()
    app = create_app(engine, ingest_root=corpus.root, refresh_interval_s=0)
    state = app.state.maxsim
    corpus.engine().delete(corpus.videos["b.webm"])  # another process commits: the server is behind
    behind = read_manifest(corpus.index).version
    assert engine.version == behind - 1

    real_snapshot = engine.store.snapshot
    opening, release = threading.Event(), threading.Event()

    def slow_snapshot(*a, **kw):
        snap = real_snapshot(*a, **kw)
        opening.set()
        release.wait(10)
        return snap

    engine.store.snapshot = slow_snapshot
    with TestClient(app) as c:
        refresher = threading.Thread(target=state.maybe_refresh)
        refresher.start()
        assert opening.wait(10)
        job_url = c.post("/ingest", json={"paths": ["c.webm"]}).json()["status_url"]
        time.sleep(1.0)  # the job would commit now, if nothing held it back
        release.set()
        refresher.join(10)
        job = _wait_job(c, job_url)
        assert job["status"] == "done" and job["version"] == behind + 1
        assert engine.version == read_manifest(corpus.index).version == behind + 1
        names = {v["name"] for v in c.get("/videos").json()["videos"]}
        assert names == {"a.webm", "c.webm"}


def test_delete_while_this_servers_ingest_job_writes_is_409(tmp_path):
    corpus = make_corpus(tmp_path)
    app = create_app(corpus.engine())
    state = app.state.maxsim
    state.delete_wait_s = 0.1
    vid = video_id(corpus.videos["a.webm"])
    with TestClient(app) as c:
        with state.guard.changing():  # as an ingest job does around each file
            r = c.delete(f"/videos/{vid}")
        assert r.status_code == 409 and "retry" in r.json()["detail"]
        assert c.delete(f"/videos/{vid}").status_code == 200
