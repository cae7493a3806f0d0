"""Subtitle parsers: SRT, WebVTT, ASS/SSA; encodings, line ends, bad cues and files that are not subtitles."""

from __future__ import annotations

import pickle
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxsim.transcripts import (
    Cue,
    SubtitleFormatError,
    SubtitleWarning,
    parse_ass,
    parse_srt,
    parse_subtitles,
    parse_vtt,
    read_subtitles,
)
from maxsim.transcripts.cues import detect_format, strip_ass_markup

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> <font color="#ff0000">world</font>

2
00:00:03,000 --> 00:00:04,000 X1:10 X2:20 Y1:5 Y2:30
{\\an8}the fat bunny
crawls out of his hole

3
01:02:03,456 --> 01:02:04,000
late line
"""


def test_srt_times_text_and_markup():
    cues = parse_srt(SRT)
    assert cues == [
        Cue(1.0, 2.5, "Hello world"),
        Cue(3.0, 4.0, "the fat bunny crawls out of his hole"),
        Cue(3723.456, 3724.0, "late line"),
    ]
    assert cues[0].duration == pytest.approx(1.5)


def test_srt_bom_crlf_and_cr_line_ends_read_the_same(tmp_path):
    expected = parse_srt(SRT)
    for i, (ending, bom) in enumerate([("\r\n", b"\xef\xbb\xbf"), ("\r", b""), ("\n", b"\xef\xbb\xbf")]):
        path = tmp_path / f"v{i}.srt"
        path.write_bytes(bom + SRT.replace("\n", ending).encode())
        assert read_subtitles(path) == expected
    path = tmp_path / "utf16.srt"
    path.write_bytes(SRT.encode("utf-16"))  # with its byte-order mark
    assert read_subtitles(path) == expected


def test_srt_cp1252_is_read_with_a_warning(tmp_path):
    path = tmp_path / "legacy.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\nCafé crème\n".encode("cp1252"))
    with pytest.warns(SubtitleWarning, match="legacy.srt: not UTF-8"):
        cues = read_subtitles(path)
    assert cues == [Cue(1.0, 2.0, "Café crème")]


def test_srt_without_numbers_or_blank_lines_and_with_dot_milliseconds():
    text = ("00:00:01.000 --> 00:00:02.000\nfirst\n2\n00:00:02,000 --> 00:00:03,000\nsecond\n"
            "00:00:04,5 --> 00:00:05,25\nthird")
    assert parse_srt(text) == [Cue(1.0, 2.0, "first"), Cue(2.0, 3.0, "second"), Cue(4.5, 5.25, "third")]


def test_srt_bad_cues_are_skipped_with_one_warning_naming_the_file():
    text = ("1\n00:00:01,000 --> 00:00:02,000\ngood\n\n2\n00:00:05,000 --> 00:00:04,000\nbackwards\n\n"
            "3\n00:00:xx,000 --> 00:00:07,000\nmalformed\n\n4\n00:00:08,000 --> garbage\nno end\n\n"
            "5\n00:00:09,000 --> 00:00:10,000\nalso good\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cues = parse_srt(text, source="talk.srt")
    assert [c.text for c in cues] == ["good", "also good"]
    msgs = [str(w.message) for w in caught if issubclass(w.category, SubtitleWarning)]
    assert len(msgs) == 1
    assert msgs[0].startswith("talk.srt: skipped 3 bad cues")
    assert "line 6: end 4.000 s before start 5.000 s" in msgs[0]
    assert "malformed timing" in msgs[0] and "malformed end time 'garbage'" in msgs[0]


def test_cues_come_sorted_and_empty_ones_are_dropped():
    text = ("00:00:05,000 --> 00:00:06,000\nlater\n\n00:00:01,000 --> 00:00:02,000\nearlier\n\n"
            "00:00:03,000 --> 00:00:04,000\n<i> </i>\n")
    assert [c.text for c in parse_srt(text)] == ["earlier", "later"]


def test_a_file_that_is_not_subtitles_is_an_error_naming_it(tmp_path):
    notes = tmp_path / "notes.srt"
    notes.write_text("just some notes\nwith no timings at all\n")
    with pytest.raises(SubtitleFormatError, match=r"notes\.srt: no SubRip cue timing"):
        read_subtitles(notes)
    binary = tmp_path / "video.srt"
    binary.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)))
    with pytest.raises(SubtitleFormatError, match=r"video\.srt: binary data"):
        read_subtitles(binary)
    with pytest.raises(SubtitleFormatError, match=r"missing\.srt: no such file"):
        read_subtitles(tmp_path / "missing.srt")
    with pytest.raises(SubtitleFormatError, match="is a directory"):
        read_subtitles(tmp_path)
    bad_vtt = tmp_path / "x.vtt"
    bad_vtt.write_text("WEBVTX\n\n00:01.000 --> 00:02.000\nhi\n")
    with pytest.raises(SubtitleFormatError, match="no SubRip cue timing|WEBVTT"):
        parse_vtt(bad_vtt.read_text(), source=bad_vtt)
    err = SubtitleFormatError("a.srt", "why")
    assert str(pickle.loads(pickle.dumps(err))) == "a.srt: why"


def test_empty_file_has_no_cues(tmp_path):
    empty = tmp_path / "empty.srt"
    empty.write_bytes(b"")
    assert read_subtitles(empty) == []
    assert parse_vtt("WEBVTT\n") == []


VTT = """WEBVTT - a talk
Kind: captions
Language: en

STYLE
::cue { color: yellow }

NOTE this note
spans lines --> with an arrow

REGION
id:fred width:40%

intro
00:01.000 --> 00:02.500 position:10%,line-left align:left size:35%
<v Ann>Hello <c.loud>there</c> &amp; welcome</v>

00:00:03.000 --> 00:00:04.000
<v.first.loud Bob Smith>the <b>fat</b> bunny
<i>crawls</i> out of his hole

00:00:05.000 --> 00:00:06.000
<ruby>漢<rt>kan</rt>字<rt>ji</rt></ruby> and <lang fr>bonjour</lang> <00:00:05.500>karaoke
"""


def test_vtt_headers_blocks_settings_and_tags():
    cues = parse_vtt(VTT)
    assert cues == [
        Cue(1.0, 2.5, "Hello there & welcome", "Ann"),
        Cue(3.0, 4.0, "the fat bunny crawls out of his hole", "Bob Smith"),
        Cue(5.0, 6.0, "漢字 and bonjour karaoke"),
    ]


def test_vtt_rolling_captions_are_deduplicated():
    text = ("WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nfirst line\n\n"
            "00:00:03.000 --> 00:00:03.010\nfirst line\n\n"
            "00:00:03.010 --> 00:00:05.000\nfirst line\nsecond<00:00:03.500><c> line</c>\n")
    assert [c.text for c in parse_vtt(text)] == ["first line", "second line"]


def test_vtt_bad_timing_is_skipped():
    text = "WEBVTT\n\n00:01.000 --> 00:0x.000\nbad\n\n00:02.000 --> 00:03.000\ngood\n"
    with pytest.warns(SubtitleWarning, match="skipped 1 bad cue"):
        assert [c.text for c in parse_vtt(text)] == ["good"]


ASS = """\ufeff[Script Info]
Title: test
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize
Style: Default,Arial,20

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:03.00,0:00:04.00,Default,Bob,0,0,0,,{\\i1}the fat bunny{\\i0}\\Ncrawls out, of his hole
Comment: 0,0:00:00.00,0:00:09.00,Default,,0,0,0,,a comment
Dialogue: 0,0:00:01.00,0:00:02.50,Default,,0,0,0,,Hello\\hworld{\\p1}m 0 0 l 100 0 100 100{\\p0} again
Dialogue: 0,0:00:05.00,bad,Default,,0,0,0,,broken
"""


def test_ass_dialogue_lines_override_tags_and_speakers():
    with pytest.warns(SubtitleWarning, match="skipped 1 bad cue"):
        cues = parse_ass(ASS)
    assert cues == [Cue(1.0, 2.5, "Hello world again"),
                    Cue(3.0, 4.0, "the fat bunny crawls out, of his hole", "Bob")]


def test_ssa_with_its_own_format_line():
    text = ("[Script Info]\nScriptType: v4.00\n\n[Events]\n"
            "Format: Marked, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
            "Dialogue: Marked=0,0:00:01.00,0:00:02.00,Default,NTP,0000,0000,0000,,old style\n")
    assert parse_ass(text) == [Cue(1.0, 2.0, "old style", "NTP")]
    with pytest.raises(SubtitleFormatError, match="Format must name Start, End and end with Text"):
        parse_ass("[Events]\nFormat: Start, Text, End\n")
    with pytest.raises(SubtitleFormatError, match="not an ASS/SSA file"):
        parse_ass("nothing here")


def test_format_detection_content_beats_extension(tmp_path):
    assert detect_format(VTT, "x.srt") == "vtt"
    assert detect_format(ASS, "x.srt") == "ass"
    assert detect_format(SRT, "x.ass") == "ass"
    assert detect_format(SRT, "x.vtt") == "srt"  # a .vtt without its header is SubRip
    path = tmp_path / "mislabelled.srt"
    path.write_text(VTT)
    assert read_subtitles(path) == parse_vtt(VTT)
    assert parse_subtitles(SRT, "srt") == parse_srt(SRT)
    with pytest.raises(ValueError, match="unknown subtitle format"):
        parse_subtitles(SRT, "sub")


def test_strip_ass_markup_keeps_text_outside_drawings():
    assert strip_ass_markup(r"{\pos(1,2)\c&H00FF00&}Hi{\p2}m 0 0 l 1 1{\p0} there\Nyou") == "Hi there you"


def _fmt(t: float, sep: str = ",") -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


_words = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), max_codepoint=0x2FFF), min_size=1,
                 max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000_000), st.integers(0, 100_000),
                          st.lists(_words, min_size=1, max_size=5)), max_size=12))
def test_srt_and_vtt_round_trip(items):
    cues = sorted((Cue(s / 1000, (s + d) / 1000, " ".join(words)) for s, d, words in items),
                  key=lambda c: (c.start, c.end))
    srt = "\n".join(f"{i + 1}\n{_fmt(c.start)} --> {_fmt(c.end)}\n{c.text}\n" for i, c in enumerate(cues))
    vtt = "WEBVTT\n\n" + "\n".join(f"{_fmt(c.start, '.')} --> {_fmt(c.end, '.')}\n{c.text}\n" for c in cues)

    def same(parsed):
        assert [(round(c.start, 3), round(c.end, 3), c.text) for c in parsed] == [
            (round(c.start, 3), round(c.end, 3), c.text) for c in cues]

    same(parse_srt(srt))
    if all(a.text != b.text for a, b in zip(cues, cues[1:], strict=False)):  # no rolling de-duplication
        same(parse_vtt(vtt))
