"""Queries beyond text (maxsim.query): an image, a clip, "more like this", text with an image; with the colour
encoder the expectations are exact (an orange frame finds the orange scenes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from maxsim import Engine, Query, QueryError, UnknownSegmentError, cli
from maxsim.media.frames import FrameSampler
from maxsim.query import cap_tokens, query_tokens, sample_times
from maxsim.testing.synthetic import COLORS

SCENES_A = [(2.0, "red"), (2.0, "orange"), (2.0, "blue")]
SCENES_B = [(2.0, "green"), (2.0, "orange"), (2.0, "purple")]


@pytest.fixture(scope="module")
def index(make_video, tmp_path_factory):
    a = make_video("query_a.mp4", SCENES_A)
    b = make_video("query_b.mp4", SCENES_B)
    eng = Engine(tmp_path_factory.mktemp("query") / "idx", encoder="color-test", segmenter="fixed:2")
    eng.ingest([a, b], progress=False)
    return eng, a.resolve(), b.resolve()


def frame(colour: str, h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), COLORS[colour], dtype=np.uint8)


def seg(engine, video, start):
    hit = next(h for h in engine.search("red orange blue green purple", k=100, thumbnails=False)
               if h.video == str(video) and abs(h.start - start) < 1e-6)
    return hit.segment_id


def spans(hits):
    return [(h.video, round(h.start, 3)) for h in hits]


def test_an_orange_frame_finds_the_orange_scenes_as_array_pil_and_png(index, tmp_path):
    eng, a, b = index
    png = tmp_path / "orange.png"
    Image.fromarray(frame("orange")).save(png)
    kinds = (frame("orange"), Image.fromarray(frame("orange")), png, str(png), png.read_bytes())
    results = [eng.search(image=img, k=6, thumbnails=False) for img in kinds]
    first = results[0]
    assert {(h.video, h.start) for h in first[:2]} == {(str(a), 2.0), (str(b), 2.0)}
    assert first[0].score > 0.9 and first[2].score < 0.2  # the other colours barely overlap
    for other in results[1:]:
        assert spans(other) == spans(first)
        assert [h.score for h in other] == pytest.approx([h.score for h in first], abs=1e-3)


def test_a_clip_finds_its_own_scene_first(index):
    eng, a, b = index
    hits = eng.search(clip=(a, 4.2, 5.8), k=3, thumbnails=False)
    assert (hits[0].video, hits[0].start) == (str(a), 4.0)  # the blue scene of a
    hits = eng.search(clip=(str(b), 2.0, 4.0), k=2, thumbnails=False)
    assert {(h.video, h.start) for h in hits} == {(str(a), 2.0), (str(b), 2.0)}


def test_like_finds_the_other_segment_of_the_same_colour_and_leaves_itself_out(index):
    eng, a, b = index
    own = seg(eng, a, 2.0)
    hits = eng.search(like=own, k=3, thumbnails=False)
    assert (hits[0].video, hits[0].start) == (str(b), 2.0)
    assert own not in [h.segment_id for h in hits] and len(hits) == 3
    with_self = eng.query(Query(like=own, include_self=True), k=2).hits
    assert with_self[0].segment_id == own and with_self[1].segment_id == hits[0].segment_id


def test_text_and_image_together_add_up(index):
    eng, a, b = index
    both = {h.segment_id: h.score for h in eng.search("blue", image=frame("orange"), k=6, thumbnails=False)}
    text = {h.segment_id: h.score for h in eng.search("blue", k=6, thumbnails=False)}
    image = {h.segment_id: h.score for h in eng.search(image=frame("orange"), k=6, thumbnails=False)}
    for sid, score in both.items():  # MaxSim sums over the query tokens of both parts
        assert score == pytest.approx(text[sid] + image[sid], abs=1e-4)
    top3 = sorted(both, key=both.get, reverse=True)[:3]
    assert set(top3) == {seg(eng, a, 2.0), seg(eng, b, 2.0), seg(eng, a, 4.0)}


def test_bad_queries_are_refused_with_clear_errors(index, tmp_path):
    eng, a, _ = index
    with pytest.raises(QueryError, match="nothing to search for"):
        eng.search(k=3)
    with pytest.raises(UnknownSegmentError, match="like=987654"):
        eng.search(like=987654)
    with pytest.raises(QueryError, match="like must be a segment id"):
        eng.search(like=True)
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"definitely not a picture")
    with pytest.raises(QueryError, match="not_an_image.png"):
        eng.search(image=bad)
    with pytest.raises(QueryError, match="no such file"):
        eng.search(image=tmp_path / "missing.jpg")
    with pytest.raises(QueryError, match=r"shape \(48, 64\)"):
        eng.search(image=np.zeros((48, 64), dtype=np.uint8))
    with pytest.raises(QueryError, match="uint8"):
        eng.search(image=np.zeros((48, 64, 3), dtype=np.float32))
    with pytest.raises(QueryError, match="outside the video"):
        eng.search(clip=(a, 7.0, 9.0))
    with pytest.raises(QueryError, match="start < end"):
        eng.search(clip=(a, 3.0, 3.0))
    with pytest.raises(QueryError, match="rerank"):
        eng.search(image=frame("red"), rerank=5)
    with pytest.raises(TypeError, match="text must be a str"):
        eng.search(42)
    with pytest.raises(TypeError, match="not both"):
        eng.query(Query("red"), like=1)


def test_long_visual_queries_are_capped(index):
    eng, a, b = index
    q = Query(clip=(a, 0.0, 6.0), max_tokens=3)
    tokens = query_tokens(q, eng.snapshot, lambda: (eng.encoder, eng.frame_sampler))
    assert tokens.shape == (3, eng.encoder.dim)
    assert torch.allclose(tokens.norm(dim=1), torch.ones(3), atol=1e-4)
    full = query_tokens(Query(clip=(a, 0.0, 6.0)), eng.snapshot, lambda: (eng.encoder, eng.frame_sampler))
    assert full.shape[0] == 12  # 2 fps over 6 s, one token a frame
    # three colours, four near-identical frames each: the reduced query keeps one token per colour
    assert (tokens @ full.T).max(0).values.min() > 0.95
    hits = eng.query(q, k=4, thumbnails=False).hits  # a's three scenes and b's orange one match a token each
    assert {(h.video, h.start) for h in hits} == {(str(a), 0.0), (str(a), 2.0), (str(a), 4.0), (str(b), 2.0)}
    assert min(h.score for h in hits) > 0.9


def test_cap_and_sampling_helpers():
    t = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    assert cap_tokens(t, 5, 64) is t
    assert cap_tokens(t, 5, 10).shape[0] <= 10
    s = FrameSampler(fps=2, max_frames=4)
    assert sample_times(1.0, 3.0, s).tolist() == [1.0, 1.5, 2.0, 2.5]
    assert sample_times(0.0, 10.0, s).shape == (4,)
    assert sample_times(1.1, 1.2, s).tolist() == pytest.approx([1.15])


def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_searches_by_image_clip_like_and_text_with_image(index, tmp_path, capsys):
    eng, a, b = index
    png = tmp_path / "orange.png"
    Image.fromarray(frame("orange")).save(png)
    code, out, err = run_cli(capsys, "search", eng.path, "--image", png, "-k", "2", "--json")
    assert code == 0, err
    assert {(h["video"], h["start"]) for h in json.loads(out)} == {(str(a), 2.0), (str(b), 2.0)}
    code, out, err = run_cli(capsys, "search", eng.path, "--clip", f"{a}:4.2:5.8", "-k", "1", "--json")
    assert code == 0, err
    assert (json.loads(out)[0]["video"], json.loads(out)[0]["start"]) == (str(a), 4.0)
    own = seg(eng, a, 2.0)
    code, out, err = run_cli(capsys, "search", eng.path, "--like", own, "-k", "1")
    assert code == 0, err
    assert f"id {seg(eng, b, 2.0)}" in out and str(b) in out  # the text output names each hit's id
    code, out, err = run_cli(capsys, "search", eng.path, "blue", "--image", png, "-k", "3", "--json")
    assert code == 0, err
    assert {h["segment_id"] for h in json.loads(out)} == {own, seg(eng, b, 2.0), seg(eng, a, 4.0)}
    code, out, err = run_cli(capsys, "search", eng.path, "--clip", "nonsense", "-k", "1")
    assert code != 0 and "VIDEO:START:END" in err
    code, out, err = run_cli(capsys, "search", eng.path)
    assert code != 0 and "nothing to search for" in err
    code, out, err = run_cli(capsys, "search", eng.path, "--like", "424242")
    assert code != 0 and "like=424242" in err


def test_like_a_deleted_segment_is_unknown(make_video, tmp_path):
    a = make_video("query_a.mp4", SCENES_A)
    b = make_video("query_b.mp4", SCENES_B)
    eng = Engine(tmp_path / "idx", encoder="color-test", segmenter="fixed:2")
    eng.ingest([a, b], progress=False)
    sid = eng.search(image=frame("red"), k=1, thumbnails=False)[0].segment_id
    assert eng.search(like=sid, k=1, thumbnails=False)
    eng.delete(a)
    with pytest.raises(UnknownSegmentError, match=f"like={sid}"):
        eng.search(like=sid)
    assert eng.search(image=frame("orange"), k=1, thumbnails=False)[0].video == str(b.resolve())


def test_moments_of_image_and_like_queries(index, capsys):
    eng, a, b = index
    moments = eng.moments(image=frame("orange"), k=2, thumbnails=False)
    assert {(m.video, m.start, m.end) for m in moments} == {(str(a), 2.0, 4.0), (str(b), 2.0, 4.0)}
    own = seg(eng, a, 2.0)
    (m,) = eng.moments(like=own, k=1, thumbnails=False)
    assert (m.video, m.start) == (str(b), 2.0) and own not in [h.segment_id for h in m.segments]
    code, out, err = run_cli(capsys, "search", eng.path, "--like", own, "-k", "1", "--group", "moments",
                             "--json")
    assert code == 0, err
    assert json.loads(out)[0]["video"] == str(b)
