"""Moments and evidence through every front end: the CLI, the HTTP API and the retrievers."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from maxsim import Engine, FixedSegmenter
from maxsim.cli import main
from maxsim.testing.synthetic import write_video


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("mfront")
    write_video(root / "v" / "harbour.mp4", [(4.0, "blue"), (6.0, "orange"), (4.0, "white")])
    write_video(root / "v" / "street.mp4", [(4.0, "red"), (4.0, "orange")])
    Engine(root / "idx", encoder="color-test").ingest([root / "v"], segmenter=FixedSegmenter(2.0),
                                                       progress=False)
    return root / "idx"


def test_cli_groups_moments_and_writes_explanations(index, tmp_path, capsys):
    assert main(["search", str(index), "orange", "-k", "2", "--group", "moments", "--json"]) == 0
    moments = json.loads(capsys.readouterr().out)
    assert [(m["start"], m["end"], len(m["segments"])) for m in moments] == [(4.0, 10.0, 3), (4.0, 8.0, 2)]
    assert moments[0]["segments"][0]["evidence"][0]["label"] == "orange"
    assert main(["search", str(index), "orange", "--group", "video", "--explain", str(tmp_path / "ex")]) == 0
    out, err = capsys.readouterr()
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 2 and "4.00-10.00" in lines[0] and "(3 segments)" in lines[0]
    pngs = sorted((tmp_path / "ex").glob("*.png"))
    assert [p.name for p in pngs] == ["01-harbour-4.00.png", "02-street-4.00.png"] and "wrote" in err
    assert Image.open(pngs[0]).format == "PNG"
    assert main(["search", str(index), "orange", "-k", "1", "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["evidence"][0]["contribution"] == pytest.approx(hit["score"], abs=2e-3)


def test_http_moments_evidence_and_explanation(index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from maxsim.server import create_app

    with TestClient(create_app(Engine(index, encoder="color-test"))) as client:
        r = client.post("/search", json={"text": "orange", "k": 2, "group": "moments"})
        assert r.status_code == 200, r.text
        body = r.json()
        (first, second) = body["moments"]
        assert (first["video_name"], first["start"], first["end"]) == ("harbour.mp4", 4.0, 10.0)
        assert [s["start"] for s in first["segments"]] == [4.0, 6.0, 8.0]
        assert first["video_url"].endswith("#t=4.000,10.000") and second["video_name"] == "street.mp4"
        assert [h["segment_id"] for h in body["hits"]] == [first["segments"][0]["segment_id"],
                                                          second["segments"][0]["segment_id"]]
        r = client.post("/search", json={"texts": ["orange", "blue"], "k": 5, "group": "video"})
        assert r.status_code == 200, r.text
        assert [len(m) for m in r.json()["moments"]] == [2, 2]
        r = client.post("/search", json={"text": "orange", "k": 1})
        (hit,) = r.json()["hits"]
        assert r.json()["moments"] is None
        (ev,) = hit["evidence"]
        assert ev["label"] == "orange" and 4.0 <= ev["time"] < 10.0 and (ev["row"], ev["col"]) == (0, 0)
        assert hit["grid"] == [1, 1]
        assert hit["explain_url"] == f"/segments/{hit['segment_id']}/explain?q=orange"
        r = client.get(hit["explain_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (480, 320)  # 96 x 64 enlarged 5x
        assert client.get("/segments/999999/explain?q=orange").status_code == 404
        r = client.get(f"/segments/{hit['segment_id']}/explain")  # q or like (more like this) is needed
        assert r.status_code == 400 and "like" in r.json()["detail"]
        r = client.post("/search", json={"text": "orange", "group": "scenes"})
        assert r.status_code == 422


def test_retrievers_return_moments_with_evidence(index):
    pytest.importorskip("langchain_core")
    from maxsim.integrations.langchain import MaxSimRetriever

    docs = MaxSimRetriever.from_index(index, k=2, group="moments").invoke("orange")
    assert [(d.metadata["start"], d.metadata["end"]) for d in docs] == [(4.0, 10.0), (4.0, 8.0)]
    assert len(docs[0].metadata["segment_ids"]) == 3 and docs[0].metadata["evidence"][0]["label"] == "orange"
    assert docs[0].metadata["thumbnail"].startswith("data:image/jpeg;base64,")
    (doc,) = MaxSimRetriever.from_index(index, k=1).invoke("orange")
    assert doc.metadata["evidence"][0]["time"] == doc.metadata["best_time"]
    with pytest.raises(ValueError, match="group must be one of"):
        MaxSimRetriever.from_index(index, group="scenes")
    pytest.importorskip("llama_index.core")
    from maxsim.integrations.llamaindex import MaxSimRetriever as LlamaRetriever

    nodes = LlamaRetriever.from_index(index, k=5, group="video").retrieve("orange")
    assert [n.node.metadata["video_name"] for n in nodes] == ["harbour.mp4", "street.mp4"]
    assert "evidence" in nodes[0].node.excluded_llm_metadata_keys
