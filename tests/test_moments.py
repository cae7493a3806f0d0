"""Moments and evidence: exact expectations from the colour encoder on synthetic colour-scene videos."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from maxsim import Engine, FixedSegmenter, Hit, Moment
from maxsim.media.explain import render_explanation
from maxsim.search.hits import match
from maxsim.search.moments import assemble, find_moments, temporal_iou
from maxsim.testing.color import ColorHistogramEncoder
from maxsim.testing.synthetic import write_video
from maxsim.types import Evidence, TokenGrid


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("moments")
    # harbour: orange from 4 s to 10 s (a 6 s scene over three 2 s segments); street: green from 5 s
    write_video(root / "v" / "harbour.mp4", [(4.0, "blue"), (6.0, "orange"), (4.0, "white")], size=(480, 272))
    write_video(root / "v" / "street.mp4", [(5.0, "red"), (6.0, "green")])
    eng = Engine(root / "idx", encoder="color-test")
    eng.ingest([root / "v"], segmenter=FixedSegmenter(seconds=2.0), progress=False)
    return eng


def test_evidence_points_into_the_orange_scene_and_sums_to_the_score(engine):
    hits = engine.search("an orange scene", k=3)
    assert {(h.start, h.end) for h in hits} == {(4.0, 6.0), (6.0, 8.0), (8.0, 10.0)}
    for h in hits:
        (e,) = h.evidence  # one query token: "orange"
        assert e.label == "orange" and e.token == 0
        assert 4.0 <= e.time < 10.0 and h.start <= e.time < h.end
        assert h.frame_times[e.frame] == e.time
        assert (e.row, e.col) == (0, 0) and h.grid == (1, 1)  # the colour encoder's 1 x 1 grid
        assert sum(x.contribution for x in h.evidence) == pytest.approx(h.score, abs=2e-3)
        assert len(h.frame_scores) == len(h.frame_times)
    d = json.loads(json.dumps(hits[0].to_dict()))
    assert d["evidence"][0]["label"] == "orange" and d["grid"] == [1, 1]


def test_two_query_tokens_each_have_evidence_on_their_own_scene(engine):
    (h,) = engine.search("red and green", k=1, videos=[engine.videos()[1]], time_range=(4.0, 6.0))
    assert [e.label for e in h.evidence] == ["red", "green"]
    red, green = h.evidence
    assert red.time < 5.0 <= green.time  # the segment 4-6 s holds the cut at 5 s
    assert sum(e.contribution for e in h.evidence) == pytest.approx(h.score, abs=2e-3)


def test_a_six_second_scene_in_two_second_segments_is_one_moment(engine):
    moments = engine.moments("an orange scene", k=3)
    best = moments[0]
    assert isinstance(best, Moment) and best.video.endswith("harbour.mp4")
    assert (best.start, best.end) == (4.0, 10.0)
    assert [(s.start, s.end) for s in best.segments] == [(4.0, 6.0), (6.0, 8.0), (8.0, 10.0)]
    assert best.score == pytest.approx(1.0, abs=2e-3) and 4.0 <= best.best_time < 10.0
    assert Image.open(io.BytesIO(best.thumbnail)).format == "JPEG"
    seen = [(m.video, s.segment_id) for m in moments for s in m.segments]
    assert len(seen) == len(set(seen))  # each segment in one moment only


def test_moment_ends_are_refined_to_the_cut_inside_a_segment(engine):
    street = engine.videos()[1]
    (m,) = engine.moments("green", k=1, videos=[street])
    # green starts at 5 s, inside the 4-6 s segment; frames are sampled every 0.5 s: 4.5 red, 5.0 green
    assert m.start == pytest.approx(4.75) and m.end == pytest.approx(11.0)
    assert m.segments[0].start == 4.0


def test_group_video_gives_one_moment_per_video(engine):
    moments = engine.moments("orange", k=5, group="video")
    assert len(moments) == 2 and len({m.video for m in moments}) == 2
    assert moments[0].video.endswith("harbour.mp4") and moments[0].score > moments[1].score
    with pytest.raises(ValueError, match="group must be one of"):
        engine.moments("orange", group="scenes")


def _hit(video, start, end, score, sid):
    return Hit(video, start, end, score, sid, (start + end) / 2, frame_times=(start, (start + end) / 2),
               frame_scores=(score, score))


def test_temporal_nms_returns_each_moment_once():
    # overlapping windows (sliding segments) of one event: merged or suppressed, never returned twice
    hits = [_hit("a", 0.0, 4.0, 0.9, 1), _hit("a", 1.0, 5.0, 0.5, 2), _hit("a", 2.0, 6.0, 0.88, 3),
            _hit("a", 20.0, 22.0, 0.7, 4), _hit("b", 0.0, 4.0, 0.6, 5)]
    moments = assemble(hits, k=10, margin=0.05)
    spans = [(m.video, m.start, m.end) for m in moments]
    assert spans[0] == ("a", 0.0, 6.0)  # 0.9 and 0.88 touch through their overlap: one moment
    assert ("a", 1.0, 5.0) not in spans  # the weak window inside it is suppressed (IoU 0.67)
    assert ("a", 20.0, 22.0) in spans and ("b", 0.0, 4.0) in spans
    assert temporal_iou((0.0, 6.0), (1.0, 5.0)) == pytest.approx(4 / 6)
    assert [m.video for m in assemble(hits, k=10, group="video")] == ["a", "b"]
    assert len(assemble(hits, k=1)) == 1
    alone = assemble(hits, group="segments")
    assert [(m.start, m.end) for m in alone][:3] == [(0.0, 4.0), (2.0, 6.0), (20.0, 22.0)]


def test_find_moments_searches_wider_until_k_moments():
    hits = [_hit("a", 2.0 * i, 2.0 * i + 2, 1.0, i) for i in range(50)]  # one long event of 50 segments
    hits += [_hit(f"v{i}", 0.0, 2.0, 0.5, 100 + i) for i in range(3)]
    asked = []

    def search(n):
        asked.append(n)
        return hits[:n]

    moments = find_moments(search, 3, len(hits))
    assert len(moments) == 3 and asked[-1] > asked[0]
    assert (moments[0].start, moments[0].end) == (0.0, 100.0)


def test_evidence_places_tokens_on_the_grid_and_says_when_it_cannot():
    enc = ColorHistogramEncoder(grid=2)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:] = (20, 60, 200)  # blue
    frame[32:, 32:] = (250, 130, 20)  # orange bottom-right cell
    d = enc._embed(np.concatenate([enc.describe_frame(np.zeros_like(frame)), enc.describe_frame(frame)]))
    (q,) = enc.encode_texts(["orange"])
    m = match(q, d, [0.0, 0.5], 0.0, 1.0, TokenGrid(1, 2, 2))
    (e,) = m.evidence
    assert (e.frame, e.time, e.row, e.col) == (1, 0.5, 1, 1) and m.grid == (2, 2)
    legacy = match(q, d, [0.0, 0.5], 0.0, 1.0, None)  # no grid recorded: frame by order, no position
    (e,) = legacy.evidence
    assert (e.frame, e.row, e.col) == (1, None, None) and legacy.grid is None
    assert match(q, d, [0.0, 0.5], 0.0, 1.0, TokenGrid(1, 3, 3)).grid is None  # a grid that does not fit


def test_explain_png_decodes_and_has_the_frame_size(engine):
    (h,) = engine.search("orange", k=1)
    png = engine.explain(h)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (480, 272)
    px = np.asarray(img.convert("RGB"))
    assert px[10:200].mean(axis=(0, 1))[0] > 200  # the orange frame under a red heatmap
    with pytest.raises(ValueError, match="no evidence"):
        engine.explain(Hit(h.video, h.start, h.end, h.score, h.segment_id, h.best_time))


def test_render_marks_the_matched_cell():
    frame = np.full((240, 480, 3), 90, np.uint8)
    hit = Hit("v", 0.0, 1.0, 1.0, 0, 0.5, frame_times=(0.5,), grid=(2, 2))
    hit.evidence = [Evidence(0, "orange", 0, 0.5, 0, 1, 1.0)]
    px = np.asarray(Image.open(io.BytesIO(render_explanation(frame, hit))).convert("RGB")).astype(int)
    top_right, top_left = px[60, 360], px[60, 120]
    assert top_right[0] - top_right[2] > 60 and abs(top_left[0] - top_left[2]) < 10


def test_an_index_written_before_token_grids_still_searches(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", [(2.0, "blue"), (2.0, "orange")])
    eng = Engine(tmp_path / "idx", encoder="color-test")
    eng.ingest([tmp_path / "v"], segmenter="fixed:2", progress=False)
    path = tmp_path / "idx" / "manifest.json"
    data = json.loads(path.read_text())
    for p in data["parts"]:
        f = tmp_path / "idx" / p["segments"]
        table = pa.ipc.open_file(f).read_all()
        table = table.drop_columns(["token_grid"])
        with pa.OSFile(str(f), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        p.pop("checksums", None)
    path.write_text(json.dumps(data))
    (h,) = Engine(tmp_path / "idx", encoder="color-test").search("orange", k=1)
    assert h.start == 2.0 and h.grid is None
    (e,) = h.evidence
    assert e.row is None and 2.0 <= e.time < 4.0
    assert torch.isfinite(torch.tensor(h.frame_scores)).all()


def test_segments_that_match_nothing_are_not_merged():
    hits = [_hit("a", 2.0 * i, 2.0 * i + 2, 0.0, i) for i in range(4)]
    assert [len(m.segments) for m in assemble(hits, k=10)] == [1, 1, 1, 1]


def test_pooled_tokens_give_frames_without_positions(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", [(2.0, "blue"), (2.0, "orange")])
    eng = Engine(tmp_path / "idx", encoder="color-test+pool(factor=2)")
    eng.ingest([tmp_path / "v"], segmenter="fixed:2", progress=False)
    (h,) = eng.search("orange", k=1)
    assert h.start == 2.0 and h.grid is None
    (e,) = h.evidence
    assert (e.row, e.col) == (None, None) and e.label == "orange" and 2.0 <= e.time < 4.0
    assert e.contribution == pytest.approx(h.score, abs=2e-3)
