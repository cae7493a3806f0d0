"""Search options (pruned search) through the LangChain and LlamaIndex retrievers."""

from __future__ import annotations

import asyncio

import pytest

from tests.serve_data import make_corpus

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")

from maxsim.integrations.langchain import MaxSimRetriever as LCRetriever  # noqa: E402
from maxsim.integrations.llamaindex import MaxSimRetriever as LIRetriever  # noqa: E402

PRUNED = {"mode": "pruned", "n_candidates": 1, "n_refine": 0, "nprobe": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    corpus = make_corpus(tmp_path_factory.mktemp("retr-pruned"))
    assert corpus.engine().build_prune_index(progress=False)
    return corpus


class Spy:
    """An engine whose search calls are recorded (options included) and passed on."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.calls: list[tuple[str, dict]] = []
        self.results: list = []  # the SearchResult of each single search, what it read included

    @property
    def encoder(self):
        return self.engine.encoder

    def search(self, text, **kw):
        self.calls.append(("search", kw))
        result = self.engine.query(text, **kw)
        self.results.append(result)
        return result.hits

    def search_batch(self, texts, **kw):
        self.calls.append(("search_batch", kw))
        return self.engine.search_batch(texts, **kw)

    def options(self) -> list[tuple[str, dict]]:
        keys = ("mode", "n_candidates", "n_refine", "nprobe")
        return [(name, {k: v for k, v in kw.items() if k in keys}) for name, kw in self.calls]


def _pairs(hits) -> list[tuple[int, float]]:
    return [(h.segment_id, round(h.score, 5)) for h in hits]


def _doc_pairs(docs) -> list[tuple[int, float]]:
    return [(d.metadata["segment_id"], round(d.metadata["score"], 5)) for d in docs]


def test_langchain_passes_search_options(corpus):
    engine = corpus.engine()
    spy = Spy(engine)
    r = LCRetriever(engine=spy, k=2, search_options=PRUNED, include_thumbnail=False)
    docs = r.invoke("blue")
    assert _doc_pairs(docs) == _pairs(engine.search("blue", k=2, **PRUNED))
    assert spy.results[0].stats.prune.candidates == 2  # pruned ran: n_candidates 1, raised to k
    assert docs[0].metadata["video_name"] == "a.webm" and docs[0].metadata["start"] == 4.0
    exact = r.invoke("blue", search_options={"mode": "exact"})  # a call's options replace the defaults
    assert _doc_pairs(exact) == _pairs(engine.search("blue", k=2))
    asyncio.run(r.ainvoke("green", search_options={"mode": "pruned", "n_candidates": 3}))
    assert spy.options() == [
        ("search", PRUNED),
        ("search", {"mode": "exact"}),
        ("search", {"mode": "pruned", "n_candidates": 3}),
    ]
    spy.calls.clear()
    batch = r.batch(["red", "green"])  # one search_batch with the options, then per-query invocations
    assert spy.options() == [("search_batch", PRUNED)]
    assert [_doc_pairs(d) for d in batch] == [_pairs(h) for h in engine.search_batch(["red", "green"], k=2,
                                                                                      **PRUNED)]
    spy.calls.clear()
    r.batch(["red", "green"], search_options={"mode": "exact"})
    assert spy.options() == [("search_batch", {"mode": "exact"})]
    assert LCRetriever(engine=spy).search_options is None  # exact search unless asked


def test_langchain_refuses_bad_search_options_early(corpus):
    engine = corpus.engine()
    with pytest.raises(ValueError, match="unknown search option.*'candidates'"):
        LCRetriever(engine=engine, search_options={"mode": "pruned", "candidates": 10})
    with pytest.raises(ValueError, match="n_candidates only applies to pruned search"):
        LCRetriever(engine=engine, search_options={"n_candidates": 10})
    with pytest.raises(ValueError, match="n_refine must be an integer from 0"):
        LCRetriever(engine=engine, search_options={"mode": "pruned", "n_refine": -1})
    r = LCRetriever(engine=Spy(engine))
    with pytest.raises(ValueError, match="mode must be 'exact' or 'pruned'"):
        r.invoke("red", search_options={"mode": "approximate"})
    assert r.engine.calls == []  # refused before any search


def test_llamaindex_passes_search_options(corpus):
    engine = corpus.engine()
    spy = Spy(engine)
    r = LIRetriever(spy, k=2, search_options=PRUNED, include_thumbnail=False)
    nodes = r.retrieve("blue")
    assert [(n.node.metadata["segment_id"], round(n.score, 5)) for n in nodes] == _pairs(
        engine.search("blue", k=2, **PRUNED)
    )
    assert spy.results[0].stats.prune.candidates == 2
    asyncio.run(r.aretrieve("green"))
    r.search_options = {"mode": "exact"}
    r.retrieve("green")
    assert spy.options() == [("search", PRUNED), ("search", PRUNED), ("search", {"mode": "exact"})]
    with pytest.raises(ValueError, match="unknown search option.*'probes'"):
        LIRetriever(engine, search_options={"mode": "pruned", "probes": 4})
    r.search_options = {"mode": "pruned", "nprobe": 0}  # changed after construction: checked per call
    spy.calls.clear()
    with pytest.raises(ValueError, match="nprobe must be an integer from 1"):
        r.retrieve("red")
    assert spy.calls == []
