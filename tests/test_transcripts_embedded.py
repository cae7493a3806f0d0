"""Subtitle streams inside MP4 and Matroska files, written by the test with PyAV, read back with their
cue times; audio decoded on the same time line."""

from __future__ import annotations

import pytest

pytest.importorskip("av")

from maxsim.transcripts import (  # noqa: E402
    Cue,
    MediaError,
    SubtitleTrack,
    choose_track,
    list_subtitle_tracks,
    read_embedded_subtitles,
    read_track,
)
from maxsim.transcripts.audio import has_audio, iter_audio, load_audio  # noqa: E402
from maxsim.transcripts.embedded import payload_text  # noqa: E402
from tests.subtitle_media import Track, write_media  # noqa: E402

CUES = [(0.5, 1.25, "hello world"), (1.5, 2.5, "the fat bunny crawls out of his hole")]


@pytest.mark.parametrize(("suffix", "codec", "texts"), [
    (".mp4", "mov_text", ["hello world", "the fat bunny crawls out of his hole"]),
    (".mkv", "subrip", ["<i>hello</i> world", "the fat bunny\ncrawls out of his hole"]),
    (".mkv", "webvtt", ["<v Ann>hello</v> world", "the <c.x>fat</c> bunny\ncrawls out of his hole"]),
    (".mkv", "ass", ["{\\i1}hello{\\i0} world", "the fat bunny\\Ncrawls out of his hole"]),
])
def test_text_streams_are_read_with_their_times(tmp_path, suffix, codec, texts):
    cues = [(s, e, t) for (s, e, _), t in zip(CUES, texts, strict=True)]
    path = write_media(tmp_path / f"v{suffix}", [Track(codec, cues, language="eng", speakers=["Ann", ""])])
    (track,) = list_subtitle_tracks(path)
    assert track.text and track.language == "eng" and track.index == 1
    got = read_track(path, track)
    assert [c.text for c in got] == ["hello world", "the fat bunny crawls out of his hole"]
    assert [(c.start, c.end) for c in got] == pytest.approx([(0.5, 1.25), (1.5, 2.5)], abs=1e-3)
    if codec in ("webvtt", "ass"):
        assert got[0].speaker == "Ann"
    chosen = read_embedded_subtitles(path)
    assert chosen is not None and chosen[0] == track and chosen[1] == got


def test_stream_choice_by_language_forced_and_default(tmp_path):
    one = [(0.0, 1.0, "x")]
    path = write_media(tmp_path / "multi.mkv", [
        Track("subrip", [(0.0, 1.0, "english forced")], language="eng", forced=True),
        Track("subrip", [(0.0, 1.0, "deutsch")], language="ger"),
        Track("subrip", [(0.0, 1.0, "english")], language="eng"),
        Track("subrip", [(0.0, 1.0, "unknown")], language="und", default=True),
        Track("ass", one, language="fre"),
    ])
    tracks = list_subtitle_tracks(path)
    assert [t.language for t in tracks] == ["eng", "ger", "eng", None, "fre"]  # Matroska drops "und"
    assert tracks[0].forced and tracks[3].default

    def text(languages):
        found = read_embedded_subtitles(path, languages)
        assert found is not None
        return found[1][0].text

    assert text(["en"]) == "english"  # forced comes last
    assert text(["de", "en"]) == "deutsch"
    assert text(["ja"]) == "unknown"  # untagged before other languages
    assert text(None) == "unknown"  # flagged default
    assert text(["fr"]) == "x"


def test_bitmap_tracks_are_never_chosen():
    bitmap = SubtitleTrack(2, "hdmv_pgs_subtitle", "eng", default=True)
    text = SubtitleTrack(3, "subrip", "ger")
    assert not bitmap.text
    assert choose_track([bitmap, text], ["en"]) == text
    assert choose_track([bitmap], ["en"]) is None
    with pytest.raises(ValueError, match="not a text codec"):
        payload_text("dvd_subtitle", b"")


def test_packets_without_duration_and_cues_before_the_first_frame(tmp_path):
    path = write_media(tmp_path / "v.mkv", [Track("subrip", [
        (0.2, 0.6, "before the video"), (1.4, None, "open ended"), (2.0, None, "last open"),
    ])], video_s=3.0, video_start=1.0)
    got = read_track(path, 1)
    # the video starts at 1 s: that is 0 on the time line; the first cue ended before it
    assert [c.text for c in got] == ["open ended", "last open"]
    assert got[0].start == pytest.approx(0.4, abs=1e-3)
    assert got[0].end == pytest.approx(1.0, abs=1e-3)  # to the next cue
    assert got[1].end > got[1].start


def test_files_without_subtitles_and_errors(tmp_path):
    path = write_media(tmp_path / "plain.mp4", [])
    assert list_subtitle_tracks(path) == []
    assert read_embedded_subtitles(path) is None
    with pytest.raises(MediaError, match="no subtitle stream with index 0"):
        read_track(path, 0)
    with pytest.raises(MediaError, match="no such file"):
        list_subtitle_tracks(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match="junk.mp4: cannot be opened as a media file"):
        list_subtitle_tracks(junk)


def test_payload_formats():
    style_box = b"\x00\x00\x00\x0cstyl\x00\x00\x00\x00"
    assert payload_text("mov_text", b"\x00\x05hello" + style_box) == ("hello", None)
    assert payload_text("mov_text", b"") == ("", None)
    # MP4 WebVTT: vttc boxes with a payl box; vtte is an empty gap
    payl = b"<v Bo>hi there"
    inner = (8 + len(payl)).to_bytes(4, "big") + b"payl" + payl
    vttc = (8 + len(inner)).to_bytes(4, "big") + b"vttc" + inner
    assert payload_text("webvtt", vttc) == ("hi there", "Bo")
    assert payload_text("webvtt", b"\x00\x00\x00\x08vtte") == ("", None)
    assert payload_text("ass", b"Dialogue: 0,0:00:01.00,0:00:02.00,Default,Al,0,0,0,,old {\\b1}style") == (
        "old style", "Al")
    assert payload_text("srt", "caf\u00e9 <b>au</b> lait".encode()) == ("café au lait", None)


def test_audio_is_decoded_on_the_video_time_line(tmp_path):
    path = write_media(tmp_path / "a.mkv", [], video_s=3.0, audio_s=2.5, video_start=1.0)
    assert has_audio(path)
    block = load_audio(path)
    assert block.sampling_rate == 16000
    assert block.start == pytest.approx(0.0, abs=0.07)  # audio and video both start at 1 s
    assert block.duration == pytest.approx(2.5, abs=0.1)
    assert -1.0 <= float(block.samples.min()) and float(block.samples.max()) <= 1.0
    assert float(abs(block.samples).max()) > 0.1  # the tone, not silence
    blocks = list(iter_audio(path, 16000, block_s=1.0))
    assert [round(b.duration, 3) for b in blocks[:2]] == [1.0, 1.0]
    assert blocks[1].start == pytest.approx(blocks[0].start + 1.0)
    assert sum(len(b.samples) for b in blocks) == len(block.samples)
    silent = write_media(tmp_path / "silent.mp4", [])
    assert not has_audio(silent)
    with pytest.raises(MediaError, match="has no audio stream"):
        load_audio(silent)
    with pytest.raises(MediaError, match="no audio stream with index 7"):
        load_audio(path, stream=7)


def test_cue_type_is_plain_data():
    c = Cue(1.0, 2.0, "x", "Ann")
    assert c.duration == 1.0 and c.speaker == "Ann"
