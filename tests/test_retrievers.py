"""LangChain and LlamaIndex retrievers, through each framework's own invoke/retrieve API."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from maxsim.engine import Engine
from tests.serve_data import TrackingEncoder, make_corpus

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore  # noqa: E402

from maxsim.integrations.langchain import MaxSimRetriever as LCRetriever  # noqa: E402
from maxsim.integrations.llamaindex import MaxSimRetriever as LIRetriever  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("retr"))


@pytest.fixture(scope="module")
def engine(corpus):
    return corpus.engine()


def _is_jpeg_data_uri(uri: str) -> bool:
    prefix = "data:image/jpeg;base64,"
    return uri.startswith(prefix) and base64.b64decode(uri[len(prefix) :])[:3] == b"\xff\xd8\xff"


def test_langchain_invoke_returns_moments_with_metadata(engine, corpus):
    r = LCRetriever(engine=engine, k=2)
    docs = r.invoke("blue")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    md = top.metadata
    assert md["video"] == corpus.videos["a.webm"]
    assert (md["start"], md["end"]) == (4.0, 8.0)
    assert 4.0 <= md["best_time"] <= 8.0
    assert md["score"] > docs[1].metadata["score"]
    assert md["deep_link"] == Path(corpus.videos["a.webm"]).as_uri() + "#t=4.000,8.000"
    assert _is_jpeg_data_uri(md["thumbnail"])
    assert md["video_name"] == "a.webm" and "a.webm" in top.page_content and "00:04.0" in top.page_content
    assert top.id == f"maxsim:{md['segment_id']}"


def test_langchain_k_filters_and_overrides(engine, corpus):
    r = LCRetriever(engine=engine, k=5, include_thumbnail=False)
    red_anywhere = r.invoke("red")
    assert {(d.metadata["video_name"], d.metadata["start"]) for d in red_anywhere[:2]} == {
        ("a.webm", 0.0),
        ("b.webm", 4.0),
    }
    assert "thumbnail" not in red_anywhere[0].metadata
    only_b = r.invoke("red", k=1, videos=[corpus.videos["b.webm"]])
    assert len(only_b) == 1 and only_b[0].metadata["video_name"] == "b.webm"
    late = r.invoke("red", time_range=(5.0, 12.0))
    assert all(d.metadata["end"] > 5.0 for d in late)
    assert late[0].metadata["video_name"] == "b.webm"  # a.webm's red scene (0-4 s) is filtered out
    fixed = LCRetriever(engine=engine, k=3, videos=[corpus.videos["a.webm"]])
    assert {d.metadata["video_name"] for d in fixed.invoke("red")} == {"a.webm"}
    with pytest.raises(ValueError, match="k must be a positive integer"):
        r.invoke("red", k=0)


def test_langchain_async_and_batch(engine):
    r = LCRetriever(engine=engine, k=1)

    async def go():
        return await asyncio.gather(r.ainvoke("green"), r.ainvoke("yellow"), r.ainvoke("red", k=2))

    green, yellow, red = asyncio.run(go())
    assert (green[0].metadata["video_name"], green[0].metadata["start"]) == ("a.webm", 8.0)
    assert (yellow[0].metadata["video_name"], yellow[0].metadata["start"]) == ("b.webm", 0.0)
    assert len(red) == 2
    batched = r.batch(["green", "yellow"])
    assert [d[0].metadata["start"] for d in batched] == [8.0, 0.0]


def test_langchain_batch_is_one_engine_call_with_callbacks_per_query(corpus):
    from langchain_core.callbacks import BaseCallbackHandler

    engine = corpus.engine()
    calls = {"search": 0, "search_batch": 0}
    real_search, real_batch = engine.search, engine.search_batch

    def search(*a, **kw):
        calls["search"] += 1
        return real_search(*a, **kw)

    def search_batch(*a, **kw):
        calls["search_batch"] += 1
        return real_batch(*a, **kw)

    engine.search, engine.search_batch = search, search_batch

    class Ends(BaseCallbackHandler):
        def __init__(self):
            self.ends = 0

        def on_retriever_end(self, documents, **kwargs):
            self.ends += 1

    r = LCRetriever(engine=engine, k=2)
    cb = Ends()
    out = r.batch(["green", "yellow", "red", "green"], config={"callbacks": [cb]}, k=1)
    assert calls == {"search": 0, "search_batch": 1} and cb.ends == 4
    assert [(d[0].metadata["video_name"], d[0].metadata["start"]) for d in out] == [
        ("a.webm", 8.0),
        ("b.webm", 0.0),
        (out[2][0].metadata["video_name"], out[2][0].metadata["start"]),
        ("a.webm", 8.0),
    ]
    assert [d.metadata["segment_id"] for d in out[2]] == [h.segment_id for h in real_batch(["red"], k=1)[0]]
    out = asyncio.run(r.abatch(["blue", "green"]))
    assert calls["search_batch"] == 2 and calls["search"] == 0
    assert [len(d) for d in out] == [2, 2] and out[0][0].metadata["start"] == 4.0
    # options the batched call cannot honour fall back to one search per query
    with pytest.raises(ValueError, match="k must be a positive integer"):
        r.batch(["red", "blue"], k=0)


def test_langchain_composes_in_a_chain(engine):
    chain = LCRetriever(engine=engine, k=2) | RunnableLambda(
        lambda docs: "\n".join(d.page_content for d in docs)
    )
    context = chain.invoke("blue")
    assert context.splitlines()[0].startswith("a.webm 00:04.0-00:08.0")


def test_langchain_from_index(corpus):
    from tests.color_encoder import ColorEncoder

    r = LCRetriever.from_index(corpus.index, encoder=ColorEncoder(), k=1)
    assert r.invoke("green")[0].metadata["start"] == 8.0
    with pytest.raises(FileNotFoundError):
        LCRetriever.from_index(corpus.root / "no-such-index", encoder=ColorEncoder())


def test_llamaindex_retrieve_returns_scored_nodes(engine, corpus):
    r = LIRetriever(engine, k=2)
    nodes = r.retrieve("blue")
    assert len(nodes) == 2 and all(isinstance(n, NodeWithScore) for n in nodes)
    top = nodes[0]
    md = top.node.metadata
    assert md["video"] == corpus.videos["a.webm"] and (md["start"], md["end"]) == (4.0, 8.0)
    assert top.score == pytest.approx(md["score"]) and top.score > nodes[1].score
    assert md["deep_link"].endswith("a.webm#t=4.000,8.000")
    assert _is_jpeg_data_uri(md["thumbnail"])
    assert top.node.node_id == f"maxsim:{md['segment_id']}"
    # what an LLM is shown: the moment's text and times, not the base64 thumbnail or the deep link
    llm_text = top.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "a.webm" in llm_text and "start: 4.0" in llm_text
    assert "base64" not in llm_text and "file://" not in llm_text


def test_llamaindex_filters_and_async(engine, corpus):
    r = LIRetriever(engine, k=3, videos=corpus.videos["b.webm"], include_thumbnail=False)
    nodes = r.retrieve("red")
    assert {n.node.metadata["video_name"] for n in nodes} == {"b.webm"}
    assert "thumbnail" not in nodes[0].node.metadata
    r2 = LIRetriever(engine, k=1, time_range=(8.0, 12.0))

    async def go():
        return await asyncio.gather(r2.aretrieve("green"), LIRetriever(engine, k=1).aretrieve("yellow"))

    green, yellow = asyncio.run(go())
    assert green[0].node.metadata["start"] == 8.0
    assert yellow[0].node.metadata["video_name"] == "b.webm"
    with pytest.raises(ValueError, match="k must be a positive integer"):
        LIRetriever(engine, k=0)


def test_llamaindex_in_a_query_engine(engine):
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    # MockLLM answers with the prompt it was given: what a real LLM would see as context
    qe = RetrieverQueryEngine.from_args(LIRetriever(engine, k=2), llm=MockLLM(), response_mode="compact")
    response = qe.query("green")
    assert response.source_nodes[0].node.metadata["start"] == 8.0
    assert "a.webm 00:08.0-00:12.0" in str(response)
    assert "base64" not in str(response)


def test_concurrent_async_retrievals_encode_one_at_a_time(corpus):
    enc = TrackingEncoder(delay_s=0.2)  # a text encode takes 20 ms: concurrent ones would overlap
    engine = Engine(corpus.index, encoder=enc, segmenter="fixed:4")
    lc, li = LCRetriever(engine=engine, k=1), LIRetriever(engine, k=1)

    async def go():
        return await asyncio.gather(
            *(lc.ainvoke(w) for w in ("red", "blue", "green", "yellow")),
            *(li.aretrieve(w) for w in ("red", "blue", "green", "yellow")),
            lc.abatch(["green", "blue"]),
        )

    out = asyncio.run(go())
    assert [d[0].metadata["start"] for d in out[:4]] == [0.0, 4.0, 8.0, 0.0]
    assert [n[0].node.metadata["start"] for n in out[4:8]] == [0.0, 4.0, 8.0, 0.0]
    assert enc.calls >= 9 and enc.overlaps == 0
