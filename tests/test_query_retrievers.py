"""The LangChain and LlamaIndex retrievers searching by image, clip and "more like this"."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from maxsim import Query
from maxsim.testing.synthetic import COLORS
from tests.serve_data import make_corpus

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")

from llama_index.core.schema import QueryBundle  # noqa: E402

from maxsim.integrations.langchain import MaxSimRetriever as LCRetriever  # noqa: E402
from maxsim.integrations.llamaindex import MaxSimRetriever as LIRetriever  # noqa: E402

# a.webm: red 0-4 s, blue 4-8 s, green 8-12 s; b.webm: yellow 0-4 s, red 4-8 s
RED = {("a.webm", 0.0), ("b.webm", 4.0)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("qretr"))


@pytest.fixture(scope="module")
def engine(corpus):
    return corpus.engine()


@pytest.fixture(scope="module")
def red_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.fromarray(np.full((40, 60, 3), COLORS["red"], dtype=np.uint8)).save(path)
    return path


def where(items):
    md = [getattr(x, "node", x).metadata for x in items]
    return {(m["video_name"], m["start"]) for m in md}


def test_langchain_by_image_clip_and_more_like(engine, corpus, red_png):
    r = LCRetriever(engine=engine, k=2, include_thumbnail=False)
    assert where(r.invoke(Query(image=red_png))) == RED
    assert where(asyncio.run(r.ainvoke(Query(image=str(red_png))))) == RED
    docs = r.invoke(Query(clip=(corpus.videos["a.webm"], 4.5, 7.5)), k=1)
    assert where(docs) == {("a.webm", 4.0)}
    first = r.invoke("red", k=1)[0]
    like = r.more_like(first, k=1)
    assert like[0].id != first.id and where(like) | where([first]) == RED
    assert r.more_like(first.id, k=1)[0].id == like[0].id
    assert asyncio.run(r.amore_like(first.metadata["segment_id"], k=1))[0].id == like[0].id
    with pytest.raises(ValueError, match="not a maxsim moment"):
        r.more_like("some text")
    with pytest.raises(TypeError, match="maxsim.Query"):
        r.invoke(42)


def test_llamaindex_by_image_bundle_query_and_more_like(engine, corpus, red_png):
    r = LIRetriever(engine, k=2, include_thumbnail=False)
    assert where(r.retrieve(QueryBundle("", image_path=str(red_png)))) == RED
    both = r.retrieve(QueryBundle("green", image_path=str(red_png)))  # text and image together
    assert where(both) <= RED | {("a.webm", 8.0)} and len(both) == 2
    nodes = r.retrieve_query(Query(clip=(corpus.videos["b.webm"], 0.5, 3.5)))
    assert ("b.webm", 0.0) in where(nodes)
    first = r.retrieve("red")[0]
    like = r.more_like(first)
    assert first.node.id_ not in [n.node.id_ for n in like] and where(like[:1]) | where([first]) == RED
    assert where(asyncio.run(r.aretrieve_query(Query(image=red_png)))) == RED
    with pytest.raises(TypeError, match="maxsim.Query"):
        r.retrieve_query("red")
