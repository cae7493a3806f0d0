"""The engine end to end with the deterministic colour encoder of tests/color_encoder.py."""

import numpy as np
import pytest
import torch

from maxsim import Engine
from maxsim.encoders.checkpoint import MissingWeightsError
from maxsim.errors import EncoderMismatchError, IndexNotFoundError
from maxsim.media.segment import FixedSegmenter, SceneSegmenter
from maxsim.testing.synthetic import write_video
from tests.color_encoder import ColorEncoder

A_SCENES = [(4.0, "red"), (4.0, "blue"), (4.0, "green")]
B_SCENES = [(3.0, "yellow"), (3.0, "red"), (3.0, "magenta")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "a": write_video(d / "a.mp4", A_SCENES, seed=1),
        "b": write_video(d / "b.mp4", B_SCENES, seed=2),
    }


@pytest.fixture
def engine(tmp_path, videos):
    eng = Engine(tmp_path / "index", encoder=ColorEncoder(), segmenter=FixedSegmenter(2.0))
    report = eng.ingest([videos["a"], videos["b"]], progress=False)
    assert report.ok and len(report.ingested) == 2
    return eng


def test_query_for_a_colour_finds_its_span(engine, videos):
    hits = engine.search("blue", k=2)
    assert {(h.video, h.start, h.end) for h in hits} == {
        (str(videos["a"].resolve()), 4.0, 6.0),
        (str(videos["a"].resolve()), 6.0, 8.0),
    }
    for h in hits:
        assert h.start <= h.best_time <= h.end
        assert h.thumbnail[:2] == b"\xff\xd8"  # a JPEG
    red = engine.search("a red scene", k=4)
    spans = {(h.video.rsplit("/", 1)[-1], h.start) for h in red}
    # b.mp4 turns red at 3 s: its 2-4 s segment has red frames too, and MaxSim takes the best token
    assert spans == {("a.mp4", 0.0), ("a.mp4", 2.0), ("b.mp4", 2.0), ("b.mp4", 4.0)}
    assert [h.score for h in red] == sorted((h.score for h in red), reverse=True)


def test_scene_segmenter_end_to_end(tmp_path, videos):
    eng = Engine(tmp_path / "scenes", encoder=ColorEncoder(), segmenter=SceneSegmenter("adaptive"))
    assert eng.ingest([videos["a"]], progress=False).ok
    (hit,) = eng.search("green", k=1)
    assert hit.start == pytest.approx(8.0, abs=0.25) and hit.end == pytest.approx(12.0, abs=0.25)
    assert len(eng) == 3


def test_search_batch_filters_and_len(engine, videos):
    assert len(engine) == 6 + 5  # 12 s and 9 s of video in 2 s segments
    batch = engine.search_batch(["blue", "yellow"], k=1)
    assert batch[0][0].start in (4.0, 6.0) and batch[1][0].video.endswith("b.mp4")
    only_b = engine.search("red", k=10, videos=[str(videos["b"])])
    assert only_b and all(h.video.endswith("b.mp4") for h in only_b)
    late = engine.search("red", k=10, time_range=(5.0, 100.0))
    assert late and all(h.end > 5.0 for h in late)
    assert all(h.video.endswith("b.mp4") for h in late[:1])
    assert engine.search("red", k=100)[-1].score <= engine.search("red", k=1)[0].score
    assert len(engine.search("red", k=100)) == len(engine)


def test_scores_equal_exact_maxsim(engine):
    q = ColorEncoder().encode_texts(["red green"])[0]
    hits = engine.search_vectors([q], k=len(engine))
    snap = engine.snapshot
    by_id = {int(s): r for r, s in enumerate(snap.segment_ids)}
    for h in hits[0]:
        d = snap.segment_tokens(by_id[h.segment_id]).double()
        want = (q.double() @ d.T).max(1).values.sum().item()
        assert h.score == pytest.approx(want, abs=1e-2)


def test_reingest_is_skipped_and_delete(engine, videos):
    again = engine.ingest([videos["a"]], progress=False)
    assert again.skipped and not again.ingested and again.version is None
    n_b = engine.delete(videos["b"])
    assert n_b == 5 and len(engine) == 6
    assert all(h.video.endswith("a.mp4") for h in engine.search("yellow", k=10))
    with pytest.raises(KeyError, match="not in the index"):
        engine.delete(videos["b"])


def test_reopen_keeps_data_and_refuses_other_encoder(engine, tmp_path):
    again = Engine(tmp_path / "index", encoder=ColorEncoder())
    assert len(again) == len(engine) and again.version == engine.version

    class Other(ColorEncoder):
        name = "other"

    with pytest.raises(EncoderMismatchError, match="test-color"):
        Engine(tmp_path / "index", encoder=Other())

    class Wider(ColorEncoder):
        dim = ColorEncoder.dim + 1

    with pytest.raises(EncoderMismatchError, match="dim"):
        Engine(tmp_path / "index", encoder=Wider())


def test_encoder_recorded_by_spec_loads_on_reopen(tmp_path, videos):
    eng = Engine(tmp_path / "i", encoder="tests.color_encoder:ColorEncoder", segmenter="fixed:4")
    eng.ingest([videos["a"]], progress=False)
    reopened = Engine(tmp_path / "i")  # no encoder: the recorded spec is used
    assert reopened.search("green", k=1)[0].start == 8.0


def test_empty_and_missing_index(tmp_path):
    eng = Engine(tmp_path / "empty", encoder=ColorEncoder())
    assert eng.search("red") == [] and len(eng) == 0
    with pytest.raises(IndexNotFoundError, match="no index at"):
        Engine(tmp_path / "missing", create=False)
    # No encoder given: the default (colqwen3, the 4B checkpoint) is loaded, and CI has no weights offline.
    with pytest.raises(MissingWeightsError, match="hf download"):
        Engine(tmp_path / "missing2")


def test_bad_inputs_are_reported_and_the_rest_ingests(tmp_path, videos):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    data = videos["b"].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    missing = tmp_path / "missing.mp4"
    eng = Engine(tmp_path / "idx", encoder=ColorEncoder(), segmenter="fixed:2")
    report = eng.ingest([empty, text, videos["a"], truncated, missing], progress=False)
    assert report.ingested == [str(videos["a"])]
    failed = dict(report.failed)
    assert set(failed) == {str(empty), str(text), str(truncated), str(missing)}
    assert all(reason for reason in failed.values())
    assert not report.ok and "FAILED" in str(report)
    assert {h.video for h in eng.search("red", k=50)} == {str(videos["a"].resolve())}
    assert eng.version == 1


class BrokenEncoder(ColorEncoder):
    def __init__(self, mode):
        self.mode = mode

    def encode_clips(self, clips):
        out = super().encode_clips(clips)
        if self.mode == "nan":
            out[0][0, 0] = float("nan")
        elif self.mode == "dim":
            out = [torch.zeros(3, self.dim + 2) for _ in out]
        return out


@pytest.mark.parametrize("mode,match", [("nan", "NaN"), ("dim", "expected")])
def test_bad_encoder_output_fails_that_video_only(tmp_path, videos, mode, match):
    eng = Engine(tmp_path / "idx", encoder=BrokenEncoder(mode), segmenter="fixed:2")
    report = eng.ingest([videos["a"]], progress=False)
    assert report.failed and match in report.failed[0][1]
    assert len(eng) == 0 and eng.version == 0


def test_storage_dtypes(tmp_path, videos):
    scores = {}
    for dtype in ("float16", "bfloat16", "float32"):
        eng = Engine(tmp_path / dtype, encoder=ColorEncoder(), dtype=dtype, segmenter="fixed:2")
        eng.ingest([videos["a"]], progress=False)
        scores[dtype] = np.array([h.score for h in eng.search("red blue", k=6)])
    np.testing.assert_allclose(scores["float16"], scores["float32"], atol=5e-3)
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], atol=3e-2)


class PickyEncoder(ColorEncoder):
    """Raises on clips of one video, as a model might on input it cannot handle."""

    def encode_clips(self, clips):
        if any(c.video.endswith("b.mp4") for c in clips):
            raise RuntimeError("cannot encode this clip")
        return super().encode_clips(clips)


def test_an_encoder_exception_fails_only_that_video(tmp_path, videos):
    eng = Engine(tmp_path / "idx", encoder=PickyEncoder(), segmenter="fixed:2")
    report = eng.ingest([videos["b"], videos["a"]], progress=False)
    assert report.ingested == [str(videos["a"])]
    assert report.failed == [(str(videos["b"]), "RuntimeError: cannot encode this clip")]
    assert len(eng) == 6 and {h.video for h in eng.search("red", k=20)} == {str(videos["a"].resolve())}


def test_search_without_thumbnails_does_not_read_them(engine, monkeypatch):
    with_thumbs = engine.search("blue", k=3)
    assert all(h.thumbnail[:2] == b"\xff\xd8" for h in with_thumbs)
    table = engine.snapshot.table

    class NoThumbnails:
        def column(self, name):
            assert name != "thumbnail", "thumbnails=False must not read the thumbnail column"
            return table.column(name)

    monkeypatch.setattr(engine.snapshot, "table", NoThumbnails())
    hits = engine.search("blue", k=3, thumbnails=False)
    assert [(h.video, h.start, h.score) for h in hits] == [(h.video, h.start, h.score) for h in with_thumbs]
    assert all(h.thumbnail is None for h in hits)
    assert engine.search_batch(["blue"], k=1, thumbnails=False)[0][0].thumbnail is None


def test_cli_search_asks_for_no_thumbnails(engine, monkeypatch, capsys):
    from maxsim import cli

    asked = []
    real = Engine.query

    def query(self, *a, **kw):
        asked.append(kw.get("thumbnails", True))
        return real(self, *a, **kw)

    monkeypatch.setattr(Engine, "query", query)
    for extra in ([], ["--json"]):
        args = ["search", str(engine.path), "blue", "-k", "2", "--encoder", "tests.color_encoder:ColorEncoder"
                ]
        assert cli.main([*args, *extra]) == 0
    assert asked == [False, False] and "blue" not in capsys.readouterr().err
