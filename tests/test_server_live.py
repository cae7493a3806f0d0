"""The service on a real uvicorn on 127.0.0.1, the ``maxsim serve`` command line and the load test smoke."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

import httpx  # noqa: E402

from maxsim.cli import build_parser  # noqa: E402
from maxsim.server import create_app, loadtest  # noqa: E402
from tests.serve_data import live_server, make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def live_url(corpus):
    with live_server(create_app(corpus.engine())) as url:
        yield url


def test_real_server_search_and_range(live_url, corpus):
    with httpx.Client(base_url=live_url, timeout=10) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        hit = c.post("/search", json={"text": "green", "k": 1}).json()["hits"][0]
        assert (hit["video_name"], hit["start"]) == ("a.webm", 8.0)
        url = hit["video_url"].split("#")[0]
        data = open(corpus.videos["a.webm"], "rb").read()
        r = c.get(url, headers={"Range": "bytes=10-29"})
        assert r.status_code == 206 and r.content == data[10:30]
        assert r.headers["content-range"] == f"bytes 10-29/{len(data)}"
        # the declared length alone is enough to refuse an oversized body
        big = c.post(
            "/search", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"}
        )
        assert big.status_code == 413
        # raw traversal attempt, not normalised by a client library
        r = c.get("/videos/..%2F..%2F..%2F..%2Fetc%2Fpasswd")
        assert r.status_code in (404, 422) and b"root:" not in r.content


def test_real_server_concurrent_clients(live_url):
    import asyncio

    async def go():
        async with httpx.AsyncClient(base_url=live_url, timeout=20) as c:
            rs = await asyncio.gather(
                *[c.post("/search", json={"text": w, "k": 2}) for w in ["red", "blue", "green", "yellow"] * 6]
            )
            return rs

    rs = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    assert [r.json()["hits"][0]["start"] for r in rs[:4]] == [0.0, 4.0, 8.0, 0.0]


def test_loadtest_smoke(corpus, tmp_path):
    r = loadtest.run(
        {
            "index": str(corpus.index),
            "encoder": "tests.color_encoder:ColorEncoder",
            "clients": 4,
            "duration_s": 1.5,
            "warmup_requests": 2,
        },
        tmp_path,
    )
    assert r["errors"] == 0, r["error_samples"]
    assert r["requests"] > 0 and r["ok"] == r["requests"]
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["server_batching"]["requests"] == r["requests"]
    assert r["target"].startswith("http://127.0.0.1:")
    assert json.loads((tmp_path / "loadtest.json").read_text())["requests"] == r["requests"]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://192.168.1.5", "http://example.com", "http://0.0.0.0"]
)
def test_loadtest_refuses_non_loopback_targets(url, tmp_path):
    with pytest.raises(loadtest.LoadTestError, match="loopback"):
        loadtest.run({"url": url, "duration_s": 1}, tmp_path)


def test_loadtest_rejects_unknown_settings(tmp_path):
    with pytest.raises(loadtest.LoadTestError, match="unknown load test setting"):
        loadtest.run({"client": 3}, tmp_path)


def test_serve_command_line_defaults_to_loopback():
    args = build_parser().parse_args(["serve", "my.index"])
    assert (args.host, args.port, args.ingest_root) == ("127.0.0.1", 8000, None)
    # as maxsim ingest: the fixed:10 segmenter, and frames sampled with the index's recorded recipe
    assert (args.segmenter, args.fps, args.max_frames, args.max_side) == ("fixed:10", None, None, None)
    args = build_parser().parse_args(
        ["serve", "idx", "--port", "9000", "--api-key", "k", "--ingest-root", "/data", "--encoder", "x:y"]
    )
    assert (args.port, args.api_key, args.ingest_root, args.encoder) == (9000, "k", "/data", "x:y")


def _open_fds_to(path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                out.append(fd)
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_load_test_server_that_dies_at_startup_leaks_no_log_handle(tmp_path):
    log = tmp_path / "server.log"
    with pytest.raises(loadtest.LoadTestError, match="exited") as err:
        loadtest._start_server(tmp_path / "no-index", dict(loadtest.DEFAULTS), log)
    assert "no-index" in str(err.value)  # the server's own error, read back from its log
    assert _open_fds_to(log.resolve()) == []  # (the traceback in err still holds the frame)
