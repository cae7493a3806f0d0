"""What Ray workers load: the driver engine's encoder spec at its pinned hub revision, checked against the
engine's encoder; shard actors need no encoder. Runs in-process (no Ray cluster)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from maxsim.distributed import RayVideoEncoder, worker_encoder
from maxsim.distributed.ingest import _EncodeBatch
from maxsim.distributed.search import _Shard
from maxsim.encoders import PooledEncoder
from maxsim.engine import Engine
from maxsim.errors import EncoderMismatchError
from maxsim.media import iter_clips
from maxsim.search import SearchOptions, prepare_queries
from maxsim.testing.synthetic import write_video
from tests.color_encoder import ColorEncoder
from tests.pinned_encoder import NEW, OLD, SPEC, PinnedHubEncoder

pd = pytest.importorskip("pandas")


@pytest.fixture
def hub(monkeypatch):
    """The hub's head is OLD when the index is made; tests move it to NEW afterwards."""
    monkeypatch.setattr(PinnedHubEncoder, "head", OLD)
    monkeypatch.setattr(PinnedHubEncoder, "loads", [])
    return PinnedHubEncoder


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "a.mp4", [(1.0, "red"), (1.0, "blue")], fps=10)


def _batch(eng: Engine, video) -> tuple[pd.DataFrame, list]:
    """The clip rows the CPU stage sends to an encoder actor, and the clips themselves."""
    rows, clips = [], []
    for clip, _ in iter_clips(str(video), eng.segmenter, eng.sampler.fresh()):
        frames = np.ascontiguousarray(clip.frames, dtype=np.uint8)
        clips.append(clip)
        rows.append({"video": str(video), "kind": "clip", "reason": "", "start": clip.start, "end": clip.end,
                     "frames": frames.tobytes(), "shape": list(frames.shape), "thumbnail": b"",
                     "timestamps": np.asarray(clip.timestamps, dtype=np.float64).tolist()})
    return pd.DataFrame(rows), clips


def _tokens(out: pd.DataFrame) -> list[torch.Tensor]:
    return [torch.from_numpy(np.frombuffer(r["tokens"], dtype=np.float32).copy()).view(r["n_tokens"], -1)
            for _, r in out.iterrows()]


def test_workers_load_the_engines_spec_at_its_pinned_revision(tmp_path, video, hub):
    eng = Engine(tmp_path / "idx", encoder=SPEC, segmenter="fixed:1")
    hub.head = NEW  # the hub moved on after the engine loaded its encoder
    kw = worker_encoder(eng.encoder, eng.encoder_load_args())
    assert kw["encoder"] == SPEC and kw["load_kwargs"] == {"revision": OLD}
    assert kw["expect"] == {"name": f"pinned-hub:org/model@{OLD}", "dim": eng.encoder.dim,
                            "settings": {"max_visual_tokens": 256}}  # device: each worker's own
    pickle.dumps(kw)  # what Ray sends to the actors: small, no model in it

    worker = _EncodeBatch(**kw)
    assert hub.loads[-1] == {"revision": OLD} and worker.encoder.name == eng.encoder.name
    assert worker.mismatch == ""
    batch, clips = _batch(eng, video)
    out = worker(batch)
    assert list(out["kind"]) == ["clip"] * len(clips) == ["clip", "clip"]
    for got, want in zip(_tokens(out), eng.encoder.encode_clips(clips), strict=True):
        assert torch.equal(got, want)

    # a worker given the bare spec follows the hub: another model version, refused before encoding
    unpinned = _EncodeBatch(SPEC, expect=kw["expect"])
    assert unpinned.encoder.name.endswith("@" + NEW)
    assert "pinned-hub:org/model@" + NEW in unpinned.mismatch and SPEC in unpinned.mismatch
    out = unpinned(batch)
    assert set(out["kind"]) == {"encoder_mismatch"} and set(out["n_tokens"]) == {0}


def test_an_engine_reopened_from_its_record_sends_the_record_not_the_model(tmp_path, hub):
    Engine(tmp_path / "idx", encoder=SPEC)
    hub.head = NEW
    eng = Engine(tmp_path / "idx")  # no encoder given: the record's spec, at the record's commit
    kw = worker_encoder(eng.encoder, eng.encoder_load_args())
    assert kw["encoder"] == SPEC and kw["load_kwargs"] == {"revision": OLD}
    assert eng.encoder.name.endswith("@" + OLD) and _EncodeBatch(**kw).mismatch == ""


def test_a_pooled_spec_pins_its_inner_revision(tmp_path, hub):
    pooled = SPEC + "+pool(factor=2)"
    for i, given in enumerate([pooled, PooledEncoder(SPEC, factor=2)]):
        eng = Engine(tmp_path / f"idx{i}", encoder=given)
        hub.head = NEW
        kw = worker_encoder(eng.encoder, eng.encoder_load_args())
        assert kw["encoder"] == SPEC + "+pool(factor=2,dedup=0.95,window=1024)"
        assert kw["load_kwargs"] == {"revision": OLD}
        worker = _EncodeBatch(**kw)
        assert isinstance(worker.encoder, PooledEncoder) and worker.encoder.inner.revision == OLD
        assert worker.mismatch == ""
        hub.head = OLD


def test_an_encoder_object_without_a_spec_is_sent_as_is(tmp_path):
    enc = ColorEncoder()
    eng = Engine(tmp_path / "idx", encoder=enc)
    kw = worker_encoder(eng.encoder, eng.encoder_load_args())
    assert kw["encoder"] is enc and kw["load_kwargs"] == {}
    worker = _EncodeBatch(**pickle.loads(pickle.dumps(kw)))  # as an actor gets it
    assert worker.encoder.name == enc.name and worker.mismatch == ""


def test_settings_that_change_vectors_must_match_runtime_ones_need_not(hub):
    expect = {"name": f"pinned-hub:org/model@{OLD}", "dim": ColorEncoder.dim,
              "settings": {"max_visual_tokens": 256}}
    assert _EncodeBatch(SPEC, {"revision": OLD, "device": "cuda:3"}, expect).mismatch == ""
    msg = _EncodeBatch(SPEC, {"revision": OLD, "max_visual_tokens": 64}, expect).mismatch
    assert "settings" in msg and "64" in msg and f"at revision {OLD}" in msg


def test_a_mismatch_row_stops_the_ingest(tmp_path, video):
    """The driver side: a worker's ``encoder_mismatch`` row raises EncoderMismatchError (an index error,
    which the ingest does not take as one bad video), with the worker's reason."""
    eng = Engine(tmp_path / "idx", encoder=ColorEncoder())
    enc = RayVideoEncoder({"encoder": "color-test", "load_kwargs": {}, "expect": None}, eng.segmenter,
                          eng.sampler, eng.manifest.dim, eng.encoder.name)
    enc.videos = [str(video)]  # its pipeline replaced by the rows it would stream
    enc._stream = iter([{"video": str(video), "kind": "encoder_mismatch", "reason": "loaded X@b, not X@a"}])
    with pytest.raises(EncoderMismatchError, match="loaded X@b, not X@a"):
        list(enc(str(video), "digest", "settings", None))


def test_shards_search_without_loading_an_encoder(tmp_path, video, hub):
    eng = Engine(tmp_path / "idx", encoder=SPEC, segmenter="fixed:1")
    eng.ingest(video, progress=False)
    hub.loads.clear()
    shard = _Shard(str(eng.path), eng.version, [p["id"] for p in eng.manifest.parts])
    q, q_off = prepare_queries(eng.encoder.encode_texts(["blue"]), eng.manifest.dim)
    s, r, _ = shard.search(q, q_off, SearchOptions(k=2))
    want_s, want_r, _ = eng.searcher.rows(q, q_off, SearchOptions(k=2))
    assert torch.equal(s, want_s) and torch.equal(r, want_r)
    assert hub.loads == []  # a shard loads no encoder: queries come encoded from the caller


def test_a_video_failing_midway_does_not_fail_the_next():
    """The rows a failed video leaves in the shared stream are skipped, not read as the next video's."""
    import numpy as np

    from maxsim.distributed import RayVideoEncoder
    from maxsim.errors import EncoderOutputError

    def row(video, kind, reason=""):
        return {"video": video, "kind": kind, "reason": reason, "start": 0.0, "end": 1.0, "timestamps": [0.5],
                "thumbnail": b"", "n_tokens": 2, "dim": 3, "tokens": np.ones((2, 3), np.float32).tobytes()}

    pipe = RayVideoEncoder({"encoder": "color-test", "load_kwargs": {}, "expect": None}, None, None, 3, "enc")
    pipe.videos = ["A", "B", "C"]  # the pipeline replaced by the rows it would stream
    pipe._stream = iter([row("A", "encoder_error", "NaN"), row("A", "clip"), row("A", "end"),
                         row("B", "clip"), row("B", "clip"), row("B", "end"),
                         row("C", "clip"), row("C", "end")])
    with pytest.raises(EncoderOutputError, match="NaN"):
        list(pipe("A", "h", "s", None))
    b = pipe("B", "h", "s", None)
    next(b)  # the caller stops reading B after one record (its own check failed)
    b.close()
    assert len(list(pipe("C", "h", "s", None))) == 1
