"""Hostile requests and files against the HTTP service: JSON values no encoder writes back, file names
that are not UTF-8, a decoder crashing inside an ingest job, named pipes under the ingest root, and the
schema pages behind the API key."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from maxsim.media.worker import CRASH_ENV  # noqa: E402
from maxsim.server import create_app  # noqa: E402
from maxsim.server.catalog import video_id  # noqa: E402
from tests.serve_data import make_corpus  # noqa: E402

BAD_NAME = b"\xff-caf\xe9.webm"  # Latin-1 bytes: not UTF-8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("hostile_srv"))


@pytest.mark.parametrize("body", [
    '{"text": "red", "k": NaN}',
    '{"text": "red", "k": Infinity}',
    '{"text": "red", "k": -Infinity}',
    '{"text": "red", "k": 1e400}',
    '{"text": "red", "time_range": [NaN, 1]}',
    '{"text": "red", "time_range": [0, 1e400]}',
    '{"text": "\\udcff"}',
    '{"texts": ["red", "\\ud800x"]}',
    '{"text": "red", "mode": "pruned", "nprobe": NaN}',
    '{"text": "red", "\\udcff": 1}',
])
def test_values_json_cannot_echo_are_a_422(corpus, body, caplog):
    with TestClient(create_app(corpus.engine())) as c, caplog.at_level(logging.ERROR):
        r = c.post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = json.loads(r.text)["detail"]  # strict JSON: no NaN, no lone surrogate written
    assert detail and all(set(d) >= {"type", "loc", "msg"} for d in detail)
    assert "NaN" not in r.text and "Infinity" not in r.text and "\\udcff" not in r.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]  # no traceback logged


def test_plain_inputs_are_still_echoed(corpus):
    with TestClient(create_app(corpus.engine())) as c:
        r = c.post("/search", json={"text": "red", "k": 2.5})
    assert r.status_code == 422 and r.json()["detail"][0]["input"] == 2.5


def test_the_schema_pages_need_the_key(corpus):
    with TestClient(create_app(corpus.engine(), api_key="s3cret")) as c:
        for url in ("/openapi.json", "/docs", "/redoc"):
            assert c.get(url).status_code == 401, url
            assert c.get(url, headers={"X-API-Key": "s3cret"}).status_code == 200, url
            assert c.get(url, params={"api_key": "wrong"}).status_code == 401, url
        page = c.get("/docs", params={"api_key": "s3cret"})
        assert page.status_code == 200 and "/openapi.json?api_key=s3cret" in page.text
        spec = c.get("/openapi.json", params={"api_key": "s3cret"}).json()
        assert "/search" in spec["paths"] and "/docs" not in spec["paths"]
        assert c.get("/").status_code == 200 and c.get("/healthz").status_code == 200  # still open
    with TestClient(create_app(corpus.engine())) as c:  # no key: open, as FastAPI serves them
        assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200


def test_an_ingest_job_survives_bad_names_crashes_and_pipes(tmp_path, monkeypatch):
    corpus = make_corpus(tmp_path)
    drop = corpus.root / "drop"
    drop.mkdir()
    bad = os.path.join(os.fsencode(drop), BAD_NAME)
    shutil.copyfile(os.fsencode(corpus.videos["a.webm"]), bad)
    shutil.copyfile(corpus.videos["b.webm"], drop / "crashes.webm")
    os.mkfifo(corpus.root / "pipe.webm")
    monkeypatch.setenv(CRASH_ENV, "segv:crashes.webm")
    app = create_app(corpus.engine(), ingest_root=corpus.root, refresh_interval_s=0)
    with TestClient(app) as c:
        r = c.post("/ingest", json={"paths": ["pipe.webm"]})
        assert r.status_code == 403 and "named pipe" in r.json()["detail"]
        r = c.post("/ingest", json={"paths": ["drop"]})  # used to kill the server (a segfault in OpenCV)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        while (job := c.get(r.json()["status_url"]).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job["status"] == "done"
        real = os.fsdecode(os.path.realpath(bad))
        assert job["ingested"] == [real]  # the surrogate escapes came back through JSON unchanged
        (failed,) = job["failed"]
        assert failed["path"].endswith("crashes.webm") and "decoder crashed" in failed["reason"]
        assert c.get("/healthz").json()["videos"] == 3
        listed = {v["path"]: v for v in c.get("/videos").json()["videos"]}
        assert listed[real]["id"] == video_id(real) and os.fsencode(listed[real]["name"]) == BAD_NAME
        body = json.dumps({"text": "blue", "k": 10, "videos": [real]})  # the path as \u escapes
        hits = c.post("/search", content=body, headers={"content-type": "application/json"}).json()["hits"]
        assert {h["video"] for h in hits} == {real}
        stream = c.get(f"/videos/{video_id(real)}")
        assert stream.status_code == 200 and stream.content == open(bad, "rb").read()
        assert "filename" in stream.headers["content-disposition"]
