"""Queries by image, clip and segment over HTTP: base64 JSON and multipart uploads, size limits, errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from maxsim.server import create_app  # noqa: E402
from maxsim.server.catalog import video_id  # noqa: E402
from maxsim.testing.synthetic import COLORS  # noqa: E402
from tests.serve_data import make_corpus  # noqa: E402

# a.webm: red 0-4 s, blue 4-8 s, green 8-12 s; b.webm: yellow 0-4 s, red 4-8 s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("qsrv"))


@pytest.fixture(scope="module")
def client(corpus):
    with TestClient(create_app(corpus.engine(), max_body_bytes=4096, max_image_bytes=64 << 10)) as c:
        yield c


def png(colour: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), COLORS[colour], dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def where(hits):
    return {(h["video_name"], h["start"]) for h in hits}


def test_base64_image_json_finds_the_red_scenes(client):
    b64 = base64.b64encode(png("red")).decode()
    for image in (b64, "data:image/png;base64," + b64):
        r = client.post("/search", json={"image": image, "k": 2})
        assert r.status_code == 200, r.text
        assert where(r.json()["hits"]) == {("a.webm", 0.0), ("b.webm", 4.0)}


def test_multipart_upload_alone_and_with_text(client):
    r = client.post("/search/image", files={"image": ("red.png", png("red"), "image/png")}, data={"k": "2"})
    assert r.status_code == 200, r.text
    assert where(r.json()["hits"]) == {("a.webm", 0.0), ("b.webm", 4.0)}
    r = client.post("/search/image", files={"image": ("red.png", png("red"), "image/png")},
                    data={"k": "3", "text": "green"})
    assert r.status_code == 200, r.text
    assert where(r.json()["hits"]) == {("a.webm", 0.0), ("b.webm", 4.0), ("a.webm", 8.0)}
    r = client.post("/search/image", files={"image": ("x.png", b"not an image", "image/png")})
    assert r.status_code == 400 and "decoded" in r.json()["detail"]
    r = client.post("/search/image", content=b"red", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/search/image", json={"image": base64.b64encode(png("red")).decode(), "k": 1})
    assert r.status_code == 200 and where(r.json()["hits"]) <= {("a.webm", 0.0), ("b.webm", 4.0)}
    r = client.post("/search/image", files={"image": ("red.png", png("red"), "image/png")}, data={"kk": "2"})
    assert r.status_code == 422 and "kk" in r.json()["detail"]


def test_images_over_the_limit_are_a_clear_413(client):
    rng = np.random.default_rng(0)
    big = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)).save(big, "PNG")  # ~68 KB > 64 KiB
    b64 = base64.b64encode(big.getvalue()).decode()
    r = client.post("/search/image", json={"image": b64})
    assert r.status_code == 413 and "image of" in r.json()["detail"] and str(64 << 10) in r.json()["detail"]
    r = client.post("/search/image", files={"image": ("big.png", big.getvalue(), "image/png")})
    assert r.status_code == 413 and "image of" in r.json()["detail"]
    r = client.post("/search", json={"image": b64})  # /search keeps the server's body limit
    assert r.status_code == 413 and "4096" in r.json()["detail"]
    r = client.post("/search/image", json={"image": b64 * 3})  # the body itself is refused before reading on
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_like_and_clip_over_http(client, corpus):
    hits = client.post("/search", json={"text": "red", "k": 1}).json()["hits"]
    own = hits[0]["segment_id"]
    r = client.post("/search", json={"like": own, "k": 1})
    assert r.status_code == 200, r.text
    (other,) = r.json()["hits"]
    assert other["segment_id"] != own and where([other]) | where(hits) == {("a.webm", 0.0), ("b.webm", 4.0)}
    r = client.post("/search", json={"like": own, "k": 1, "include_self": True})
    assert r.json()["hits"][0]["segment_id"] == own
    vid = video_id(corpus.videos["a.webm"])
    r = client.post("/search", json={"clip": {"video": vid, "start": 4.5, "end": 7.5}, "k": 1})
    assert r.status_code == 200, r.text
    assert where(r.json()["hits"]) == {("a.webm", 4.0)}
    r = client.post("/search", json={"like": 123456789})
    assert r.status_code == 404 and "123456789" in r.json()["detail"]
    r = client.post("/search", json={"clip": {"video": "/etc/passwd", "start": 0, "end": 1}})
    assert r.status_code == 404  # only indexed videos: no file of the server is read for a stranger
    r = client.post("/search", json={"clip": {"video": vid, "start": 30, "end": 40}})
    assert r.status_code == 400 and "outside the video" in r.json()["detail"]
    r = client.post("/search", json={"image": "%%%not base64%%%"})
    assert r.status_code == 400 and "base64" in r.json()["detail"]
    r = client.post("/search", json={"image": base64.b64encode(png("red")).decode(), "rerank": 3})
    assert r.status_code == 400 and "rerank" in r.json()["detail"]


def test_moments_and_explanations_of_visual_queries(client):
    b64 = base64.b64encode(png("red")).decode()
    r = client.post("/search", json={"image": b64, "k": 2, "group": "moments"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {(m["video_name"], m["start"]) for m in body["moments"]} == {("a.webm", 0.0), ("b.webm", 4.0)}
    assert all(h["explain_url"] is None for h in body["hits"])  # an image cannot be put in a URL
    own = client.post("/search", json={"text": "red", "k": 1}).json()["hits"][0]["segment_id"]
    hits = client.post("/search", json={"like": own, "k": 1}).json()["hits"]
    url = hits[0]["explain_url"]
    assert url.endswith(f"like={own}")
    r = client.get(url)
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/segments/{own}/explain").status_code == 400
    assert client.get(f"/segments/{own}/explain?like=99999999").status_code == 404
    r = client.post("/search/image", files={"image": ("red.png", png("red"), "image/png")},
                    data={"k": "2", "group": "video"})
    assert r.status_code == 200 and len(r.json()["moments"]) == 2
