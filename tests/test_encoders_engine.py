"""The engine end to end with the tiny random ColQwen3 (real model code, real processor, offline)."""

from __future__ import annotations

import numpy as np
import pytest

from maxsim import Clip, Engine
from maxsim.errors import EncoderMismatchError
from maxsim.media.segment import FixedSegmenter
from maxsim.testing.synthetic import COLORS, write_video

A_SCENES = [(4.0, "red"), (4.0, "blue")]
B_SCENES = [(2.0, "green"), (4.0, "red")]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("colqwen-videos")
    return {"a": write_video(d / "a.mp4", A_SCENES, seed=3), "b": write_video(d / "b.mp4", B_SCENES, seed=4)}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, videos, tiny_colqwen3):
    eng = Engine(tmp_path_factory.mktemp("colqwen-index") / "index", encoder=tiny_colqwen3)
    report = eng.ingest([videos["a"], videos["b"]], segmenter=FixedSegmenter(2.0), progress=False)
    assert report.ok and len(report.ingested) == 2 and report.segments == 4 + 3
    return eng


def test_text_search_returns_spans(engine, videos, tiny_colqwen3):
    n_query_tokens = len(tiny_colqwen3.encode_texts(["a red scene"])[0])
    hits = engine.search("a red scene", k=3)
    assert len(hits) == 3
    paths = {str(v.resolve()) for v in videos.values()}
    for h in hits:
        assert h.video in paths
        assert h.end - h.start == pytest.approx(2.0)
        assert h.start in (0.0, 2.0, 4.0, 6.0)
        assert h.start <= h.best_time <= h.end
        assert np.isfinite(h.score) and abs(h.score) <= n_query_tokens * 1.01  # unit vectors, fp16 store
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_clip_query_finds_its_colour(engine, tiny_colqwen3, videos):
    """A query made of the visual tokens of a plain red clip finds the red spans: the tokens the engine
    stored are the ones this encoder gives for the decoded frames."""
    frames = np.broadcast_to(np.array(COLORS["red"], dtype=np.uint8), (4, 64, 96, 3)).copy()
    q = tiny_colqwen3.encode_clips([Clip("q", 0.0, 2.0, frames, np.arange(4) * 0.5)])[0]
    hits = engine.search_vectors([q], k=4)[0]
    spans = {(h.video.rsplit("/", 1)[-1], h.start) for h in hits}
    assert spans == {("a.mp4", 0.0), ("a.mp4", 2.0), ("b.mp4", 2.0), ("b.mp4", 4.0)}


def test_index_records_checkpoint_and_refuses_other_weights(engine, tmp_path, tiny_colqwen3):
    from maxsim.encoders.colqwen3 import ColQwen3Encoder
    from tests.tiny_models import build_tiny_colqwen3

    rec = engine.manifest.encoder
    assert rec["name"] == tiny_colqwen3.name and "@sha256-" in rec["name"]
    assert rec["settings"]["max_visual_tokens"] == tiny_colqwen3.settings["max_visual_tokens"]
    assert len(Engine(engine.path, encoder=tiny_colqwen3)) == 7  # same checkpoint: reopens
    other = ColQwen3Encoder.from_pretrained(str(build_tiny_colqwen3(tmp_path / "tiny-colqwen3", seed=1)))
    assert other.name != tiny_colqwen3.name  # same folder name, other weights
    with pytest.raises(EncoderMismatchError):
        Engine(engine.path, encoder=other)


def test_engine_from_folder_spec(tmp_path, videos, tiny_colqwen3_dir):
    eng = Engine(tmp_path / "index", encoder=str(tiny_colqwen3_dir), segmenter=FixedSegmenter(2.0))
    assert eng.ingest([videos["b"]], progress=False).ok
    reopened = Engine(tmp_path / "index")  # the encoder comes from the spec recorded in the index
    (hit,) = reopened.search("green", k=1)
    assert hit.video.endswith("b.mp4") and hit.end > hit.start


def test_cli_cpu_preset_with_a_local_checkpoint(tmp_path, videos, tiny_colqwen3_dir):
    from maxsim.cli import main
    from maxsim.index import read_manifest

    idx = tmp_path / "cpu-index"
    code = main(["ingest", str(idx), str(videos["a"]), "--preset", "cpu", "--encoder", str(tiny_colqwen3_dir),
                 "--fixed", "4", "-q"])
    assert code == 0
    man = read_manifest(idx)
    assert man.encoder["spec"] == f"colqwen3-cpu:{tiny_colqwen3_dir}"
    assert man.encoder["settings"]["max_visual_tokens"] == 256
    eng = Engine(idx)  # reopens with the recorded spec: the same preset and checkpoint
    hits = eng.search("red", k=1)
    assert hits and len(hits[0].to_dict()) >= 6
    assert max(len(t) for t in eng.snapshot.table.column("frame_times").to_pylist()) <= 4
