"""The HTTP service through FastAPI's TestClient: search, media, catalog, ingest jobs, limits, auth."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from maxsim.server import create_app  # noqa: E402
from maxsim.server.catalog import video_id  # noqa: E402
from tests.color_encoder import ColorEncoder  # noqa: E402
from tests.serve_data import make_corpus  # noqa: E402
from tests.webm import write_webm  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("srv"), extra={"c.webm": [(4.0, "magenta"), (4.0, "cyan")]})


@pytest.fixture(scope="module")
def client(corpus):
    with TestClient(create_app(corpus.engine(), max_body_bytes=4096)) as c:
        yield c


def _ids(corpus):
    return {name: video_id(path) for name, path in corpus.videos.items()}


def test_search_one_and_batch(client, corpus):
    r = client.post("/search", json={"text": "blue", "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["hits"][0]
    assert (top["video_name"], top["start"], top["end"]) == ("a.webm", 4.0, 8.0)
    assert top["video"] == corpus.videos["a.webm"] and top["video_id"] == _ids(corpus)["a.webm"]
    assert top["video_url"] == f"/videos/{top['video_id']}#t=4.000,8.000"
    assert top["thumbnail_url"] == f"/segments/{top['segment_id']}/thumbnail"
    assert top["thumbnail"] is None and len(body["hits"]) == 2 and body["took_ms"] >= 0
    r = client.post("/search", json={"texts": ["green", "yellow", "red"], "k": 1, "include_thumbnails": True})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [(h[0]["video_name"], h[0]["start"]) for h in res[:2]] == [("a.webm", 8.0), ("b.webm", 0.0)]
    assert all(len(h) == 1 for h in res)
    assert res[0][0]["thumbnail"].startswith("data:image/jpeg;base64,")


def test_search_matches_the_engine(client, corpus):
    expected = corpus.engine().search("red", k=3)
    got = client.post("/search", json={"text": "red", "k": 3}).json()["hits"]
    assert [(h["segment_id"], round(h["score"], 5)) for h in got] == [
        (e.segment_id, round(e.score, 5)) for e in expected
    ]


def test_search_filters(client, corpus):
    ids = _ids(corpus)
    r = client.post("/search", json={"text": "red", "k": 5, "videos": [ids["b.webm"]]})
    assert {h["video_name"] for h in r.json()["hits"]} == {"b.webm"}
    r = client.post("/search", json={"text": "red", "k": 5, "videos": [corpus.videos["a.webm"]]})
    assert {h["video_name"] for h in r.json()["hits"]} == {"a.webm"}
    r = client.post("/search", json={"text": "red", "k": 1, "time_range": [5, 100]})
    assert r.json()["hits"][0]["video_name"] == "b.webm"
    r = client.post("/search", json={"text": "red", "videos": ["0123456789abcdef"]})
    assert r.status_code == 404 and "unknown video" in r.json()["detail"]


@pytest.mark.parametrize(
    "body, what",
    [
        ({"text": "red", "texts": ["blue"]}, "Extra inputs are not permitted"),
        ({"texts": ["red", ""]}, "at least 1 character"),
        ({"text": ""}, "at least 1 character"),
        ({"text": "red", "k": 0}, "greater than or equal to 1"),
        ({"text": "red", "k": "many"}, "valid integer"),
        ({"text": "red", "time_range": [1]}, "time_range"),
        ({"texts": []}, "at least 1 item"),
        ({"texts": ["red"] * 65}, "at most 64 items"),
        ({"text": "red", "colour": "blue"}, "Extra inputs are not permitted"),
        ({"text": "x" * 2001}, "at most 2000 characters"),
    ],
)
def test_search_validation_is_a_clear_422(client, body, what):
    r = client.post("/search", json=body)
    assert r.status_code == 422, r.text
    assert what in r.text


def test_search_values_the_schema_cannot_express_are_a_400(client):
    r = client.post("/search", json={})  # text, image, clip and like are each optional: one is needed
    assert r.status_code == 400 and "nothing to search for" in r.json()["detail"]
    r = client.post("/search", json={"text": "red", "k": 101})
    assert r.status_code == 400 and "limit of 100" in r.json()["detail"]
    r = client.post("/search", json={"text": "red", "time_range": [10, 2]})
    assert r.status_code == 400 and "before its start" in r.json()["detail"]


def test_malformed_json_is_422(client):
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_thumbnail(client):
    hit = client.post("/search", json={"text": "green", "k": 1}).json()["hits"][0]
    r = client.get(hit["thumbnail_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:3] == b"\xff\xd8\xff"
    assert client.get("/segments/999999/thumbnail").status_code == 404
    assert client.get("/segments/-1/thumbnail").status_code == 422
    assert client.get("/segments/abc/thumbnail").status_code == 422


def test_video_streaming_with_ranges(client, corpus):
    vid = _ids(corpus)["a.webm"]
    data = open(corpus.videos["a.webm"], "rb").read()
    full = client.get(f"/videos/{vid}")
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "video/webm" and full.headers["accept-ranges"] == "bytes"
    part = client.get(f"/videos/{vid}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/videos/{vid}", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    rest = client.get(f"/videos/{vid}", headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.status_code == 206 and rest.content == data[-10:]
    bad = client.get(f"/videos/{vid}", headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416


@pytest.mark.parametrize(
    "path",
    [
        "/videos/../../../../etc/passwd",
        "/videos/..%2F..%2F..%2Fetc%2Fpasswd",
        "/videos/%2e%2e/%2e%2e/etc/passwd",
        "/videos/etc%2Fpasswd",
        "/videos/" + "0" * 16,
        "/videos/ABCDEF0123456789",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fapp.py",
        "/segments/..%2F..%2Fetc%2Fpasswd/thumbnail",
    ],
)
def test_path_traversal_is_refused(client, path):
    r = client.get(path)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert b"root:" not in r.content and b"def create_app" not in r.content


def test_only_indexed_files_are_served(client, corpus, tmp_path):
    # a video file that exists, is under the same folder, but is not in the index
    stray = write_webm(tmp_path / "stray.webm", [(1.0, "red")])
    assert client.get(f"/videos/{video_id(str(stray.resolve()))}").status_code == 404
    # an id of a file that exists on the machine but was never indexed
    assert client.get(f"/videos/{video_id('/etc/passwd')}").status_code == 404


def test_oversized_requests_get_413(client):
    big = {"text": "red " * 2000}  # > 4096 bytes
    r = client.post("/search", json=big)
    assert r.status_code == 413 and "4096" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/ingest", content=b'{"paths": ["' + b"a" * 5000 + b'"]}')
    assert r.status_code == 413
    assert client.post("/search", json={"text": "red"}).status_code == 200  # the server is fine after


def test_videos_list_and_healthz(client, corpus):
    videos = client.get("/videos").json()["videos"]
    assert {v["name"] for v in videos} == {"a.webm", "b.webm"}  # c.webm was written but not ingested
    a = next(v for v in videos if v["name"] == "a.webm")
    assert a["segments"] == 3 and a["indexed_until"] == 12.0 and a["id"] == _ids(corpus)["a.webm"]
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["segments"] == 5 and h["videos"] == 2 and h["encoder"] == "test-color"
    assert h["auth_required"] is False and h["ingest_enabled"] is False


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {
        "/search",
        "/videos/{video_id}",
        "/segments/{segment_id}/thumbnail",
        "/ingest",
        "/jobs/{job_id}",
        "/healthz",
        "/videos",
    } <= set(spec["paths"])
    assert "delete" in spec["paths"]["/videos/{video_id}"]


def test_ingest_disabled_without_root(client, corpus):
    r = client.post("/ingest", json={"paths": [corpus.videos["a.webm"]]})
    assert r.status_code == 403 and "--ingest-root" in r.json()["detail"]


def test_concurrent_searches_are_batched(corpus):
    engine = corpus.engine()
    calls = []
    real = engine.query_batch

    def counting(texts, options=None, **kw):
        calls.append(len(texts))
        time.sleep(0.02)  # a busy engine: requests pile up behind the running batch
        return real(texts, options, **kw)

    engine.query_batch = counting
    app = create_app(engine, batch_window_ms=20)
    words = ["red", "blue", "green", "yellow"] * 8

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            rs = await asyncio.gather(
                *[c.post("/search", json={"text": w, "k": 1 + i % 3}) for i, w in enumerate(words)]
            )
            return rs, (await c.get("/healthz")).json()

    rs, health = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    assert sum(calls) == len(words) and len(calls) < len(words) / 4, calls
    for i, (w, r) in enumerate(zip(words, rs, strict=True)):
        hits = r.json()["hits"]
        assert len(hits) == 1 + i % 3
        want = real([w], k=1 + i % 3)[0].hits
        assert [h["segment_id"] for h in hits] == [e.segment_id for e in want]
    assert health["batching"]["requests"] == len(words) and health["batching"]["largest_batch"] > 1


def test_api_key(corpus):
    app = create_app(corpus.engine(), api_key="s3cret")
    with TestClient(app) as c:
        assert c.post("/search", json={"text": "red"}).status_code == 401
        assert c.post("/search", json={"text": "red"}, headers={"X-API-Key": "wrong"}).status_code == 401
        ok = c.post("/search", json={"text": "red"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        assert (
            c.post("/search", json={"text": "red"}, headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        assert c.post("/search", json={"text": "red"}, params={"api_key": "s3cret"}).status_code == 401
        assert c.get("/videos").status_code == 401
        hit = ok.json()["hits"][0]
        vurl = hit["video_url"].split("#")[0]
        assert c.get(vurl).status_code == 401
        assert c.get(vurl, params={"api_key": "s3cret"}).status_code == 200
        assert c.get(hit["thumbnail_url"], headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get(f"/videos/{hit['video_id']}", params={"api_key": "s3cre"}).status_code == 401
        assert c.delete(f"/videos/{hit['video_id']}").status_code == 401
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json()["auth_required"] is True
        assert c.get("/").status_code == 200


def test_ingest_jobs_delete_and_refresh(tmp_path):
    corpus = make_corpus(tmp_path, extra={"c.webm": [(4.0, "magenta"), (4.0, "cyan")]})
    outside = write_webm(tmp_path / "outside" / "o.webm", [(2.0, "purple")])
    os.symlink(outside, corpus.root / "link.webm")
    (corpus.root / "sub").mkdir()
    os.symlink(outside.parent, corpus.root / "sub" / "escape")
    app = create_app(corpus.engine(), ingest_root=corpus.root, refresh_interval_s=0)
    with TestClient(app) as c:
        assert c.get("/healthz").json()["ingest_enabled"] is True
        for paths, code in [
            ([str(outside)], 403),
            (["../outside/o.webm"], 403),
            ([str(corpus.root / "link.webm")], 403),  # a symlink pointing out of the root
            (["/etc/passwd"], 403),
            (["missing.webm"], 403),
            (["x" * 300 + ".webm"], 403),  # a name the file system cannot hold (found by schemathesis)
            ([str(corpus.root / "a.webm") + "\u0000.txt"], 403),
            (["sub"], 400),  # only an escaping symlinked folder in it: no video under the root
        ]:
            r = c.post("/ingest", json={"paths": paths})
            assert r.status_code == code, (paths, r.status_code, r.text)
        assert c.post("/ingest", json={"paths": []}).status_code == 422

        assert c.post("/search", json={"text": "magenta", "k": 1}).json()["hits"][0]["video_name"] != "c.webm"
        r = c.post("/ingest", json={"paths": ["c.webm", "a.webm"]})
        assert r.status_code == 202, r.text
        job_url = r.json()["status_url"]
        deadline = time.monotonic() + 30
        while (job := c.get(job_url).json())["status"] in ("queued", "running"):
            assert 0 <= job["progress"] <= 1 and time.monotonic() < deadline
            time.sleep(0.05)
        assert job["status"] == "done" and job["total"] == 2 and job["done"] == 2 and job["progress"] == 1
        assert job["ingested"] == [corpus.videos["c.webm"]] and job["segments"] == 2
        assert [s["path"] for s in job["skipped"]] == [corpus.videos["a.webm"]]  # unchanged: skipped
        assert c.get("/jobs").json()["jobs"][0]["id"] == job["id"]
        assert c.get("/jobs/nope").status_code == 404
        hit = c.post("/search", json={"text": "magenta", "k": 1}).json()["hits"][0]
        assert (hit["video_name"], hit["start"]) == ("c.webm", 0.0)

        cid = video_id(corpus.videos["c.webm"])
        d = c.delete(f"/videos/{cid}")
        assert d.status_code == 200 and d.json()["deleted_segments"] == 2
        assert c.delete(f"/videos/{cid}").status_code == 404
        assert c.get(f"/videos/{cid}").status_code == 404
        assert c.get(f"/segments/{hit['segment_id']}/thumbnail").status_code == 404
        assert all(
            h["video_name"] != "c.webm"
            for h in c.post("/search", json={"text": "magenta", "k": 10}).json()["hits"]
        )

        # a commit by another process (here: another Engine on the same folder) is followed
        corpus.engine().ingest([corpus.videos["c.webm"]], progress=False)
        assert "c.webm" in {v["name"] for v in c.get("/videos").json()["videos"]}  # no search needed
        hit = c.post("/search", json={"text": "cyan", "k": 1}).json()["hits"][0]
        assert (hit["video_name"], hit["start"]) == ("c.webm", 4.0)
        assert c.get(f"/videos/{cid}").status_code == 200


def test_create_app_checks_its_arguments(corpus, tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        create_app(corpus.engine(), ingest_root=tmp_path / "nope")
    with pytest.raises(ValueError, match="max_k"):
        create_app(corpus.engine(), max_k=0)
    with pytest.raises(FileNotFoundError):
        create_app(tmp_path / "no-index", encoder=ColorEncoder())
    app = create_app(corpus.index, encoder=ColorEncoder())  # from a path
    with TestClient(app) as c:
        assert c.get("/healthz").json()["segments"] == 5


def test_delete_while_another_writer_holds_the_index_is_409(tmp_path):
    corpus = make_corpus(tmp_path)
    engine = corpus.engine()
    with TestClient(create_app(engine)) as c:
        vid = video_id(corpus.videos["a.webm"])
        with corpus.engine().store.writing():  # e.g. a `maxsim ingest` running on the same index
            r = c.delete(f"/videos/{vid}")
        assert r.status_code == 409 and "retry" in r.json()["detail"]
        assert c.delete(f"/videos/{vid}").status_code == 200


def test_a_failing_engine_call_fails_its_requests_only(corpus):
    engine = corpus.engine()
    real = engine.query_batch

    def flaky(texts, options=None, **kw):
        if "boom" in texts:
            raise RuntimeError("engine exploded")
        return real(texts, options, **kw)

    engine.query_batch = flaky
    with TestClient(create_app(engine), raise_server_exceptions=False) as c:
        assert c.post("/search", json={"text": "boom"}).status_code == 500
        assert c.post("/search", json={"text": "red"}).status_code == 200  # the batcher goes on


def test_cors_only_for_the_origins_given(corpus):
    with TestClient(create_app(corpus.engine(), cors_origins=["https://app.example"])) as c:
        pre = c.options(
            "/search",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-api-key",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        r = c.post("/search", json={"text": "red"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(corpus.engine())) as c:  # default: no CORS at all
        r = c.post("/search", json={"text": "red"}, headers={"Origin": "https://app.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
