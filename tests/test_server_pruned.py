"""Pruned search over HTTP: request options, their validation, the server's default mode (create_app and
``maxsim serve --pruned``), batching that never mixes options, prune stats and /healthz."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from maxsim import cli  # noqa: E402
from maxsim.search import SearchOptions  # noqa: E402
from maxsim.server import create_app  # noqa: E402
from tests.serve_data import make_corpus  # noqa: E402

ENC = "tests.color_encoder:ColorEncoder"
N_SEGMENTS = 5  # a.webm: 3 segments of 4 s, b.webm: 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    corpus = make_corpus(tmp_path_factory.mktemp("pruned"))
    assert corpus.engine().build_prune_index(progress=False)
    return corpus


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The same videos, without a prune index."""
    return make_corpus(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def client(corpus):
    with TestClient(create_app(corpus.engine())) as c:
        yield c


def _pairs(hits) -> list[tuple[int, float]]:
    return [(h["segment_id"], round(h["score"], 5)) for h in hits]


def _engine_pairs(hits) -> list[tuple[int, float]]:
    return [(h.segment_id, round(h.score, 5)) for h in hits]


def test_pruned_with_all_segments_as_candidates_is_exact(client):
    for text in ("red", "blue", "green", "yellow"):
        exact = client.post("/search", json={"text": text, "k": N_SEGMENTS})
        pruned = client.post(
            "/search", json={"text": text, "k": N_SEGMENTS, "mode": "pruned", "n_candidates": N_SEGMENTS}
        )
        assert exact.status_code == 200 and pruned.status_code == 200, pruned.text
        assert exact.json()["mode"] == "exact" and pruned.json()["mode"] == "pruned"
        assert exact.json()["prune_stats"] is None and pruned.json()["prune_stats"] is None  # not asked
        assert _pairs(pruned.json()["hits"]) == _pairs(exact.json()["hits"])
        assert len(pruned.json()["hits"]) == N_SEGMENTS
    body = {"texts": ["red", "green"], "k": 3}
    exact = client.post("/search", json=body).json()
    pruned = client.post("/search", json={**body, "mode": "pruned", "n_candidates": 10, "n_refine": 0}).json()
    assert pruned["mode"] == "pruned"
    assert [_pairs(h) for h in pruned["results"]] == [_pairs(h) for h in exact["results"]]


def test_pruned_with_few_candidates_returns_valid_hits_and_stats(client, corpus):
    engine = corpus.engine()
    opts = {"mode": "pruned", "n_candidates": 1, "n_refine": 0, "nprobe": 1}
    r = client.post("/search", json={"text": "blue", "k": 2, "include_prune_stats": True, **opts})
    assert r.status_code == 200, r.text
    body = r.json()
    hits = body["hits"]
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
    assert (hits[0]["video_name"], hits[0]["start"], hits[0]["end"]) == ("a.webm", 4.0, 8.0)
    assert all(0 <= h["segment_id"] < N_SEGMENTS for h in hits)
    assert _pairs(hits) == _engine_pairs(engine.search("blue", k=2, **opts))
    stats = body["prune_stats"]
    # n_candidates below k is raised to k; the lists, bags and candidates read are a fraction of the tokens
    assert stats["queries"] == 1 and stats["candidates"] == 2 and stats["exhaustive_parts"] == 0
    assert 0 < stats["bytes_read"] < stats["total_token_bytes"] and 0 < stats["fraction"] < 1
    # a batch request's stats are summed over its texts
    r = client.post("/search", json={"texts": ["red", "green", "yellow"], "k": 1, "include_prune_stats": True,
                                     **opts})
    assert r.json()["prune_stats"]["queries"] == 3 and r.json()["prune_stats"]["candidates"] == 3
    # exact search has no prune stats to give
    r = client.post("/search", json={"text": "blue", "include_prune_stats": True})
    assert r.json()["mode"] == "exact" and r.json()["prune_stats"] is None


@pytest.mark.parametrize(
    "extra, what",
    [
        ({"mode": "fast"}, "'exact' or 'pruned'"),
        ({"mode": "pruned", "n_candidates": 0}, "greater than or equal to 1"),
        ({"mode": "pruned", "n_candidates": -5}, "greater than or equal to 1"),
        ({"mode": "pruned", "n_candidates": 10**9}, "less than or equal to 100000000"),
        ({"mode": "pruned", "n_candidates": "many"}, "valid integer"),
        ({"mode": "pruned", "n_candidates": 2.5}, "valid integer"),
        ({"mode": "pruned", "n_candidates": [3]}, "valid integer"),
        ({"mode": "pruned", "n_refine": -1}, "greater than or equal to 0"),
        ({"mode": "pruned", "nprobe": 0}, "greater than or equal to 1"),
        ({"mode": "pruned", "nprobe": 10**6}, "less than or equal to 65536"),
        ({"mode": "pruned", "candidates": 100}, "Extra inputs are not permitted"),
    ],
)
@pytest.mark.parametrize("form", ["single", "batch"])
def test_bad_search_options_are_a_422(client, extra, what, form):
    body = {"text": "red"} if form == "single" else {"texts": ["red", "blue"]}
    r = client.post("/search", json={**body, **extra})
    assert r.status_code == 422, r.text
    assert what in r.text


@pytest.mark.parametrize("form", ["single", "batch"])
def test_pruning_knobs_for_an_exact_search_are_a_400(client, form):
    body = {"text": "red"} if form == "single" else {"texts": ["red", "blue"]}
    r = client.post("/search", json={**body, "mode": "exact", "n_candidates": 100})
    assert r.status_code == 400 and "n_candidates only applies to mode 'pruned', not 'exact'" in r.text
    r = client.post("/search", json={**body, "mode": "exact", "nprobe": 4, "n_refine": 0})
    assert r.status_code == 400 and "n_refine, nprobe only apply" in r.text
    # without "mode" on a server whose default is exact
    r = client.post("/search", json={**body, "n_candidates": 3})
    assert r.status_code == 400 and '"mode": "pruned"' in r.json()["detail"]
    assert "n_candidates" in r.json()["detail"]


def test_healthz_reports_the_prune_index_and_defaults(client, plain):
    h = client.get("/healthz").json()
    assert h["prune_index"] is True
    assert h["search_defaults"] == {"mode": "exact", "n_candidates": None, "n_refine": None, "nprobe": None,
                                    "rerank": 0}
    with TestClient(create_app(plain.engine())) as c:
        assert c.get("/healthz").json()["prune_index"] is False


def test_pruned_search_without_a_prune_index_scores_everything(plain):
    with TestClient(create_app(plain.engine())) as c:
        exact = c.post("/search", json={"text": "red", "k": 3}).json()
        pruned = c.post("/search", json={"text": "red", "k": 3, "mode": "pruned", "n_candidates": 1,
                                         "include_prune_stats": True}).json()
    assert pruned["mode"] == "pruned" and _pairs(pruned["hits"]) == _pairs(exact["hits"])
    stats = pruned["prune_stats"]
    assert stats["exhaustive_parts"] == 1 and stats["candidates"] == 0 and stats["fraction"] >= 1.0


def test_server_default_mode_and_request_overrides(corpus):
    app = create_app(corpus.engine(), search_options={"mode": "pruned", "n_candidates": 2, "n_refine": 0})
    with TestClient(app) as c:
        h = c.get("/healthz").json()["search_defaults"]
        assert h == {"mode": "pruned", "n_candidates": 2, "n_refine": 0, "nprobe": None, "rerank": 0}
        r = c.post("/search", json={"text": "green", "k": 1, "include_prune_stats": True}).json()
        assert r["mode"] == "pruned" and r["prune_stats"]["candidates"] == 2  # the server's n_candidates
        assert (r["hits"][0]["video_name"], r["hits"][0]["start"]) == ("a.webm", 8.0)
        r = c.post("/search", json={"text": "green", "k": 1, "n_candidates": 3, "include_prune_stats": True})
        assert r.json()["prune_stats"]["candidates"] == 3  # the request's knob wins, the rest stay
        r = c.post("/search", json={"text": "green", "k": 1, "mode": "exact", "include_prune_stats": True})
        assert r.json()["mode"] == "exact" and r.json()["prune_stats"] is None
        # a knob without mode is fine here: the server's default mode is pruned
        assert c.post("/search", json={"text": "green", "nprobe": 2}).json()["mode"] == "pruned"
    with pytest.raises(ValueError, match="unknown search option"):
        create_app(corpus.engine(), search_options={"mode": "pruned", "candidates": 2})
    with pytest.raises(ValueError, match="only applies to pruned search"):
        create_app(corpus.engine(), search_options={"n_candidates": 2})


def test_batching_never_mixes_search_options(corpus):
    engine = corpus.engine()
    calls: list[tuple[list[str], int, dict]] = []
    real = engine.query_batch

    def recording(texts, options):
        knobs = options.knobs()
        calls.append((list(texts), options.k, {} if knobs == {"mode": "exact"} else knobs))
        return real(texts, options)

    engine.query_batch = recording
    app = create_app(engine, batch_window_ms=400)  # a wide window: every request below arrives inside it
    p2 = {"mode": "pruned", "n_candidates": 2, "n_refine": 0}
    requests = [  # (text, k, options, include_prune_stats)
        ("red", 2, {}, False),
        ("blue", 2, {}, False),
        ("green", 2, p2, False),
        ("yellow", 2, p2, False),
        ("magenta", 2, {**p2, "n_candidates": 4}, False),
        ("cyan", 3, p2, False),  # same options, other k: a pruned search's defaults follow k
        ("red blue", 4, p2, True),  # stats asked: batched like any request, each gets its own stats
        ("green yellow", 4, p2, True),
    ]

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(
                c.post("/search", json={"text": t, "k": k, "include_prune_stats": s, **o})
                for t, k, o, s in requests
            ))

    responses = asyncio.run(go())
    calls = list(calls)  # the engine calls the requests made (the checks below search again)
    searched_with = {t: (k, opts) for texts, k, opts in calls for t in texts}
    for (text, k, opts, stats), r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == opts.get("mode", "exact")
        assert searched_with[text][1] == opts, (text, calls)  # the engine call had this request's options
        assert _pairs(body["hits"]) == _engine_pairs(real([text], SearchOptions(k=k, **opts))[0].hits)
        assert (body["prune_stats"] is not None) == stats
        if stats:
            assert body["prune_stats"]["queries"] == 1 and body["prune_stats"]["candidates"] == 4
    groups = sorted(sorted(texts) for texts, _, _ in calls)
    assert groups == [  # requests with equal options (and, pruned, equal k) share an engine call
        ["blue", "red"], ["cyan"], ["green", "yellow"], ["green yellow", "red blue"], ["magenta"]
    ], calls


# -- maxsim serve --pruned --------------------------------------------------------------------------------
def _serve(monkeypatch, argv: list[str]):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.setdefault("app", app))
    code = cli.main(["serve", *argv, "--encoder", ENC, "-q"])
    return code, started.get("app")


def test_serve_pruned_makes_pruned_the_default(monkeypatch, corpus, plain, capsys):
    code, app = _serve(monkeypatch, [str(corpus.index), "--pruned", "--candidates", "3", "--refine", "0"])
    assert code == 0 and app is not None
    assert "no prune index" not in capsys.readouterr().err
    with TestClient(app) as c:
        assert c.get("/healthz").json()["search_defaults"] == {
            "mode": "pruned", "n_candidates": 3, "n_refine": 0, "nprobe": None, "rerank": 0
        }
        r = c.post("/search", json={"text": "blue", "k": 1, "include_prune_stats": True}).json()
        assert r["mode"] == "pruned" and r["prune_stats"]["candidates"] == 3
        assert (r["hits"][0]["video_name"], r["hits"][0]["start"]) == ("a.webm", 4.0)
        assert c.post("/search", json={"text": "blue", "mode": "exact"}).json()["mode"] == "exact"
    code, app = _serve(monkeypatch, [str(corpus.index)])
    with TestClient(app) as c:
        assert c.post("/search", json={"text": "blue"}).json()["mode"] == "exact"
    # pruned on an index without a prune index: served (exhaustively), with a warning
    code, app = _serve(monkeypatch, [str(plain.index), "--pruned"])
    assert code == 0 and app is not None and "has no prune index" in capsys.readouterr().err


def test_serve_refuses_knobs_without_pruned_and_bad_values(monkeypatch, corpus, capsys):
    code, app = _serve(monkeypatch, [str(corpus.index), "--candidates", "3"])
    assert code == 2 and app is None and "add --pruned" in capsys.readouterr().err
    code, app = _serve(monkeypatch, [str(corpus.index), "--pruned", "--nprobe", "0"])
    assert code == 2 and app is None and "nprobe must be an integer from 1" in capsys.readouterr().err
