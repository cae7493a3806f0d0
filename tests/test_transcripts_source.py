"""A video's transcript from the best source: sidecar files and subtitle streams ranked together."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("av")

from maxsim.transcripts import (  # noqa: E402
    MediaError,
    SubtitleFormatError,
    SubtitleWarning,
    load_transcript,
)
from tests.subtitle_media import Track, write_media  # noqa: E402


def _srt(text: str) -> str:
    return f"1\n00:00:00,500 --> 00:00:01,500\n{text}\n"


@pytest.fixture
def video(tmp_path):
    return write_media(tmp_path / "talk.mp4", [
        Track("mov_text", [(0.2, 0.9, "embedded english")], language="eng"),
        Track("mov_text", [(0.2, 0.9, "eingebettet deutsch")], language="ger"),
    ])


def test_sidecar_first_within_a_language(video, tmp_path):
    (tmp_path / "talk.en.srt").write_text(_srt("sidecar english"))
    t = load_transcript(video, ["en"])
    assert (t.source, t.language, t.origin) == ("sidecar", "en", str(tmp_path / "talk.en.srt"))
    assert t.cues[0].text == "sidecar english" and len(t) == 1
    t = load_transcript(video, ["de", "en"])  # the language preference beats the kind of source
    assert (t.source, t.language, t.origin) == ("embedded", "ger", "stream 2 (mov_text)")
    assert t.cues[0].text == "eingebettet deutsch"
    assert load_transcript(video, ["en"], sidecars=False).cues[0].text == "embedded english"
    assert load_transcript(video, ["de"], embedded=False).cues[0].text == "sidecar english"


def test_without_preference_a_sidecar_wins(video, tmp_path):
    (tmp_path / "talk.fr.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nfrançais\n")
    t = load_transcript(video)
    assert t.source == "sidecar" and t.cues[0].text == "français"


def test_unreadable_candidates_are_skipped_with_a_warning(video, tmp_path):
    (tmp_path / "talk.en.srt").write_text("not subtitles at all")
    with pytest.warns(SubtitleWarning, match=r"talk\.en\.srt: no SubRip cue timing"):
        t = load_transcript(video, ["en"])
    assert t.source == "embedded" and t.cues[0].text == "embedded english"
    with pytest.raises(SubtitleFormatError, match=r"talk\.en\.srt"):
        load_transcript(video, ["en"], strict=True)
    (tmp_path / "talk.en.srt").write_text("")  # readable, but no cues: the next candidate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_transcript(video, ["en"]).source == "embedded"


def test_no_transcript(tmp_path):
    plain = write_media(tmp_path / "plain.mkv", [])
    assert load_transcript(plain) is None
    (tmp_path / "plain.srt").write_text(_srt("only a sidecar"))
    assert load_transcript(plain, embedded=False).cues[0].text == "only a sidecar"
    with pytest.raises(MediaError, match="no such file"):
        load_transcript(tmp_path / "missing.mp4")
