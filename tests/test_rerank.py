"""The rerank stage: frames decoded again by the times the index keeps, hits re-ordered with both scores,
through the engine, the CLI, the HTTP API and the retrievers; and the Qwen3-VL-Reranker end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from maxsim import Engine, SearchOptions, cli
from maxsim.errors import RerankError
from maxsim.media.frames import scale_frame
from maxsim.media.segment import FixedSegmenter
from maxsim.media.video import frames_at, iter_frames
from maxsim.rerank import hit_clips, load_reranker, rerank_hits
from maxsim.testing.synthetic import write_video
from maxsim.types import FrameSize, Hit
from tests.color_encoder import ColorEncoder
from tests.rerank_judge import ColourJudge, WrongCount

JUDGE = "tests.rerank_judge:ColourJudge"
# b.mp4 turns red at 3 s: with 2 s segments, its 2-4 s segment is half red, its 4-6 s one all red.
A_SCENES = [(4.0, "red"), (4.0, "blue"), (4.0, "green")]
B_SCENES = [(3.0, "yellow"), (3.0, "red"), (3.0, "magenta")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("rerank-videos")
    return {"a": write_video(d / "a.mp4", A_SCENES, seed=1), "b": write_video(d / "b.mp4", B_SCENES, seed=2)}


@pytest.fixture(scope="module")
def index(tmp_path_factory, videos):
    path = tmp_path_factory.mktemp("rerank") / "index"
    eng = Engine(path, encoder=ColorEncoder(), segmenter=FixedSegmenter(2.0))
    assert eng.ingest([videos["a"], videos["b"]], progress=False).ok
    return path


def engine(index, reranker=None) -> Engine:
    return Engine(index, encoder=ColorEncoder(), reranker=reranker if reranker is not None else ColourJudge())


def spans(hits):
    return [(h.video.rsplit("/", 1)[-1], h.start) for h in hits]


# -- decoding frames again ----------------------------------------------------------------------------------
def test_frames_at_gives_the_frames_the_decode_pass_gave(tmp_path):
    path = write_video(tmp_path / "long.mp4", [(6.0, "red"), (6.0, "blue"), (8.0, "green")], fps=10.0,
                       seed=3)
    decoded = list(iter_frames(path))
    times = [t for t, _ in decoded]
    pick = [150, 3, 77, 199, 120, 0, 121]  # unsorted; far ones seek, near ones decode from the start
    got = frames_at(path, [times[i] for i in pick])
    for i, (t, frame) in zip(pick, got, strict=True):
        assert t == times[i]
        np.testing.assert_array_equal(frame, decoded[i][1])
    (t, frame), = frames_at(path, [times[-1] + 5.0])  # past the end: the last frame
    assert t == times[-1]
    assert frames_at(path, []) == []
    with pytest.raises(ValueError, match="finite"):
        frames_at(path, [float("nan")])


# -- the engine ---------------------------------------------------------------------------------------------
def test_search_rerank_reorders_and_keeps_both_scores(index, videos):
    plain = engine(index).search("red", k=6)
    by_id = {h.segment_id: h.score for h in plain}
    judge = ColourJudge()
    eng = engine(index, judge)
    hits = eng.search("red", k=3, rerank=6)
    # MaxSim ties every segment with one red frame; the judge prefers the all-red ones
    assert set(spans(hits[:2])) == {("a.mp4", 0.0), ("a.mp4", 2.0)} and spans(hits[2:]) == [("b.mp4", 4.0)]
    assert ("b.mp4", 2.0) in spans(plain[:4])  # the half-red segment was among MaxSim's best
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert set(h.scores) == {"maxsim", "rerank"} and h.score == h.scores["rerank"]
        assert h.scores["maxsim"] == pytest.approx(by_id[h.segment_id])
        assert json.loads(json.dumps(h.to_dict()))["scores"] == h.scores
    (query, seen), = judge.seen
    assert query == "red" and len(seen) == 6  # the best 6 re-scored
    half = next(c for c in seen if c.video.endswith("b.mp4") and c.start == 2.0)
    assert judge.score("red", [half])[0] == pytest.approx(0.5, abs=0.15)


def test_reranker_sees_the_ingested_frames_at_its_own_size(index, videos):
    judge = ColourJudge(max_pixels=24 * 16)
    hits = engine(index, judge).search("blue", k=2, rerank=2)
    decoded = dict(iter_frames(videos["a"]))
    for clip in judge.seen[0][1]:
        hit = next(h for h in hits if h.start == clip.start)
        assert tuple(clip.timestamps) == hit.frame_times and len(hit.frame_times) == 4  # 2 fps, 2 s
        assert clip.frames.shape[1:] == (16, 24, 3)  # 96x64 scaled to 384 pixels
        for t, frame in zip(clip.timestamps, clip.frames, strict=True):
            want = scale_frame(decoded[t], None, FrameSize(max_pixels=24 * 16))[..., ::-1]  # BGR -> RGB
            np.testing.assert_array_equal(frame, want)


def test_rerank_fewer_than_k_still_reranks_k(index):
    hits = engine(index).search("red green", k=4, rerank=2)
    assert len(hits) == 4 and all("rerank" in h.scores for h in hits)
    plain = engine(index).search("red", k=2, rerank=0)
    assert all(h.scores == {"maxsim": h.score} for h in plain)
    with pytest.raises(ValueError, match="rerank must be an integer from 0 to 1000"):
        engine(index).search("red", rerank=-1)
    batch = engine(index).search_batch(["red", "blue"], k=2, rerank=4)
    assert [set(spans(b)) for b in batch] == [{("a.mp4", 0.0), ("a.mp4", 2.0)},
                                              {("a.mp4", 4.0), ("a.mp4", 6.0)}]


def test_query_records_the_rerank_and_vectors_cannot_rerank(index):
    judge = ColourJudge()
    eng = engine(index, judge)
    (r,) = eng.query_batch(["red"], SearchOptions(k=2, rerank=5))
    assert len(r.hits) == 2 and r.stats.reranked == 5 and r.stats.reranker == judge.name
    assert r.stats.rerank_ms is not None and r.stats.rerank_ms >= 0
    assert r.stats.to_dict()["rerank"]["hits"] == 5
    plain = eng.query("red", k=2)
    assert plain.stats.reranked == 0 and "rerank" not in plain.stats.to_dict()
    assert SearchOptions(k=3, rerank=10).first_stage() == SearchOptions(k=10)
    assert SearchOptions(k=30, rerank=10).first_stage() == SearchOptions(k=30)
    with pytest.raises(ValueError, match="rerank needs the query text"):
        eng.search_vectors(eng.encoder.encode_texts(["red"]), k=2, rerank=4)
    assert len(judge.seen) == 1  # the vector search never reached the reranker


def test_pruned_search_reranks_too(tmp_path, index):
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    eng = engine(copy)
    eng.build_prune_index(progress=False)
    hits = eng.search("red", k=3, rerank=6, mode="pruned")
    assert set(spans(hits)) == {("a.mp4", 0.0), ("a.mp4", 2.0), ("b.mp4", 4.0)}


def test_a_video_that_is_gone_is_named(tmp_path, videos):
    gone = tmp_path / "gone.mp4"
    shutil.copy(videos["b"], gone)
    eng = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter=FixedSegmenter(2.0),
                 reranker=ColourJudge())
    assert eng.ingest([videos["a"], gone], progress=False).ok
    gone.unlink()
    with pytest.raises(RerankError, match=r"gone\.mp4: no such file.*maxsim delete") as err:
        eng.search("red", k=3, rerank=6)
    assert err.value.video == str(gone.resolve())
    hits = eng.search("red", k=6)
    kept = rerank_hits("red", hits, ColourJudge(), on_missing="drop")
    assert kept and all(h.video.endswith("a.mp4") for h in kept)
    with pytest.raises(ValueError, match="on_missing"):
        hit_clips(hits, None, on_missing="skip")


def test_hits_without_frame_times_and_broken_rerankers(index, videos):
    h = Hit(str(videos["a"].resolve()), 4.0, 6.0, 0.5, 1, 5.0)
    (clip,) = hit_clips([h])
    assert len(clip.timestamps) == 8 and 4.0 <= clip.timestamps.min() and clip.timestamps.max() < 6.0
    assert clip.frames.shape[1:] == (64, 96, 3)  # no reranker size: at most 448 px
    (out,) = rerank_hits("blue", [h], ColourJudge())
    assert out.scores == {"first_stage": 0.5, "rerank": out.score} and out.score > 0.9
    with pytest.raises(RerankError, match="returned 1 scores for 2 clips"):
        rerank_hits("red", [h, h], WrongCount())
    assert rerank_hits("red", [], ColourJudge()) == []


def test_load_reranker_specs():
    assert isinstance(load_reranker(JUDGE), ColourJudge)
    judge = ColourJudge()
    assert load_reranker(judge) is judge
    with pytest.raises(ValueError, match="unknown reranker 'nope'"):
        load_reranker("nope")
    with pytest.raises(TypeError, match="has no score"):
        load_reranker("tests.color_encoder:ColorEncoder")
    with pytest.raises(ValueError, match="cannot import"):
        load_reranker("tests.no_such_module:X")


# -- front ends ---------------------------------------------------------------------------------------------
def test_cli_search_rerank(index, capsys):
    code = cli.main(["search", str(index), "red", "-k", "3", "--rerank", "6", "--reranker", JUDGE,
                     "--encoder", "tests.color_encoder:ColorEncoder", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    hits = json.loads(out.out)
    assert {(h["video"].rsplit("/", 1)[-1], h["start"]) for h in hits} == {
        ("a.mp4", 0.0), ("a.mp4", 2.0), ("b.mp4", 4.0)}
    assert all(set(h["scores"]) == {"maxsim", "rerank"} for h in hits)
    code = cli.main(["search", str(index), "red", "-k", "2", "--rerank", "2", "--reranker", JUDGE,
                     "--encoder", "tests.color_encoder:ColorEncoder"])
    assert code == 0 and "(maxsim " in capsys.readouterr().out


def test_http_rerank(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from maxsim.server import create_app
    from tests.serve_data import make_corpus

    corpus = make_corpus(tmp_path)
    eng = Engine(corpus.index, encoder=ColorEncoder(), reranker=ColourJudge())
    with TestClient(create_app(eng, search_options={"rerank": 3})) as c:
        assert c.get("/healthz").json()["search_defaults"]["rerank"] == 3
        hits = c.post("/search", json={"text": "red", "k": 2}).json()["hits"]
        assert all(set(h["scores"]) == {"maxsim", "rerank"} and h["score"] == h["scores"]["rerank"]
                   for h in hits)
        plain = c.post("/search", json={"text": "red", "k": 2, "rerank": 0}).json()["hits"]
        assert c.post("/search", json={"text": "red", "k": 2, "rerank": 0}).status_code == 200
        assert all(set(h["scores"]) == {"maxsim"} for h in plain)
        r = c.post("/search", json={"texts": ["red", "blue"], "k": 1, "mode": "pruned", "rerank": 2})
        assert r.status_code == 200 and all("rerank" in hs[0]["scores"] for hs in r.json()["results"])
        assert c.post("/search", json={"text": "red", "rerank": 5000}).status_code == 422
        moved = corpus.videos["b.webm"]
        shutil.move(moved, moved + ".away")
        try:
            r = c.post("/search", json={"text": "red", "k": 3})
            assert r.status_code == 409 and "b.webm" in r.json()["detail"]
        finally:
            shutil.move(moved + ".away", moved)


def test_retriever_search_options_rerank(tmp_path):
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    from maxsim.integrations.langchain import MaxSimRetriever
    from tests.serve_data import make_corpus

    corpus = make_corpus(tmp_path)
    eng = Engine(corpus.index, encoder=ColorEncoder(), reranker=ColourJudge())
    docs = MaxSimRetriever(engine=eng, k=2, search_options={"rerank": 3}).invoke("red")
    assert len(docs) == 2 and all(set(d.metadata["scores"]) == {"maxsim", "rerank"} for d in docs)
    with pytest.raises(ValueError, match="rerank must be an integer from 0 to 1000"):
        MaxSimRetriever(engine=eng, search_options={"rerank": -2})


# -- the Qwen3-VL-Reranker, end to end ----------------------------------------------------------------------
def test_qwen3_vl_reranker_through_the_engine(index, tiny_qwen3vl_dir):
    eng = Engine(index, encoder=ColorEncoder(), reranker=f"qwen3-vl-reranker:{tiny_qwen3vl_dir}")
    hits = eng.search("red", k=3, rerank=4)
    assert len(hits) == 3 and eng.reranker.name.startswith("qwen3-vl-reranker:")
    assert all(0.0 <= h.score <= 1.0 and h.score == h.scores["rerank"] for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_reranker_that_cannot_be_loaded_is_a_clear_error(index, tmp_path):
    eng = Engine(index, encoder=ColorEncoder(), reranker=f"qwen3-vl-reranker:{tmp_path / 'absent'}")
    with pytest.raises(RerankError, match="not available: reranker 'qwen3-vl-reranker:.*absent"):
        eng.search("red", rerank=2)
    assert eng.search("red", k=1)  # searching without rerank is unaffected
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from maxsim.server import create_app

    with TestClient(create_app(eng)) as c:
        r = c.post("/search", json={"text": "red", "k": 1, "rerank": 2})
        assert r.status_code == 400 and "not available" in r.json()["detail"]
        assert c.post("/search", json={"text": "red", "k": 1}).status_code == 200


def test_serve_rerank_and_sampling_flags(monkeypatch, tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import uvicorn
    from fastapi.testclient import TestClient

    from tests.serve_data import make_corpus

    corpus = make_corpus(tmp_path)
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.setdefault("app", app))
    code = cli.main(["serve", str(corpus.index), "--encoder", "tests.color_encoder:ColorEncoder", "--rerank",
                     "3", "--reranker", JUDGE, "--max-side", "64", "-q"])
    assert code == 0
    state = started["app"].state.maxsim
    assert isinstance(state.engine.reranker, ColourJudge)  # loaded at startup: searches re-rank by default
    assert state.engine.sampler.max_side == 64 and state.engine.sampler.fps == 2.0  # the index's, resized
    with TestClient(started["app"]) as c:
        assert c.get("/healthz").json()["search_defaults"]["rerank"] == 3
        hits = c.post("/search", json={"text": "red", "k": 2}).json()["hits"]
        assert all("rerank" in h["scores"] for h in hits)
    code = cli.main(["serve", str(corpus.index), "--encoder", "tests.color_encoder:ColorEncoder", "--rerank",
                     "5000", "-q"])
    assert code == 2


def test_batcher_groups_reranked_requests_by_the_hits_re_scored():
    from maxsim.server.batcher import _Pending

    def key(**kw):
        return _Pending(["t"], SearchOptions(**kw), None).group()

    assert key(k=3) == key(k=7)  # exact: any k shares a call
    assert key(k=3, rerank=10) == key(k=10, rerank=10) != key(k=3)  # k up to rerank: the same pool
    assert key(k=12, rerank=10) != key(k=13, rerank=10)  # beyond it, k is the pool
