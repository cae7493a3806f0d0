"""Sidecar subtitle files: discovery by name, which one wins, and the fingerprint that makes a video
changed."""

from __future__ import annotations

from maxsim.transcripts import choose_sidecar, find_sidecars, sidecar_fingerprint
from maxsim.transcripts.languages import language_rank, normalize_language
from maxsim.transcripts.sidecars import parse_sidecar_name

CUE = "1\n00:00:01,000 --> 00:00:02,000\nhello\n"


def _touch(folder, *names):
    for n in names:
        (folder / n).write_text(CUE)


def test_names_that_are_and_are_not_sidecars():
    assert parse_sidecar_name("talk.mp4", "talk.srt").language is None
    car = parse_sidecar_name("talk.mp4", "talk.en-US.forced.VTT")
    assert (car.format, car.language, car.forced, car.hearing_impaired) == ("vtt", "en-US", True, False)
    assert parse_sidecar_name("talk.mp4", "talk.hi.srt").language == "hi"  # Hindi
    car = parse_sidecar_name("talk.mp4", "talk.en.hi.srt")  # English for the hearing impaired
    assert (car.language, car.hearing_impaired) == ("en", True)
    assert parse_sidecar_name("talk.mp4", "talk.English.sdh.ass").language == "English"
    assert parse_sidecar_name("talk.mp4", "talk.eng.default.ssa").default
    for other in ("talk.part2.srt", "talks.srt", "talk.txt", "Talk.srt", "talk.en.mp4", "xtalk.srt"):
        assert parse_sidecar_name("talk.mp4", other) is None, other
    # a video whose name has dots
    assert parse_sidecar_name("my.talk.v2.mkv", "my.talk.v2.de.srt").language == "de"


def test_find_sidecars_ignores_other_videos_and_folders(tmp_path):
    (tmp_path / "talk.mp4").write_bytes(b"x")
    _touch(tmp_path, "talk.srt", "talk.en.vtt", "talk.part2.srt", "other.srt", "talk.de.ass")
    (tmp_path / "talk.fr.srt").mkdir()
    names = [c.path.name for c in find_sidecars(tmp_path / "talk.mp4")]
    assert names == ["talk.de.ass", "talk.en.vtt", "talk.srt"]
    assert find_sidecars(tmp_path / "missing-folder" / "v.mp4") == []


def test_which_sidecar_wins(tmp_path):
    video = tmp_path / "talk.mp4"
    _touch(tmp_path, "talk.srt", "talk.en.vtt", "talk.en.srt", "talk.de.srt", "talk.en.forced.srt",
           "talk.fr.default.srt")
    cars = find_sidecars(video)

    def win(languages):
        return choose_sidecar(cars, languages).path.name

    assert win(None) == "talk.srt"  # no preference: the untagged one
    assert win(["en"]) == "talk.en.srt"  # SRT before WebVTT, forced last
    assert win(["eng"]) == "talk.en.srt"  # ISO 639-2 codes match too
    assert win(["de", "en"]) == "talk.de.srt"
    assert win(["ja", "en"]) == "talk.en.srt"
    assert win(["ja"]) == "talk.srt"  # untagged before other languages
    forced_only = [c for c in cars if c.forced]
    assert choose_sidecar(forced_only, ["en"]).forced
    assert choose_sidecar([], ["en"]) is None
    tagged = [c for c in cars if c.language is not None and not c.forced]
    assert choose_sidecar(tagged, None).path.name == "talk.fr.default.srt"  # flagged default


def test_language_matching():
    assert normalize_language("en-GB") == "en" == normalize_language("ENG") == normalize_language("english")
    assert normalize_language("ger") == normalize_language("deu") == "de"
    assert normalize_language("und") is None and normalize_language(None) is None
    assert normalize_language("tlh") == "tlh"  # unknown codes compare as written
    assert language_rank("fr", ["de", "fr"]) == 1
    assert language_rank(None, ["de", "fr"]) == 2
    assert language_rank("ja", ["de", "fr"]) == 3
    assert language_rank("ja", None) == 0


def test_fingerprint_changes_with_any_sidecar(tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"x")
    assert sidecar_fingerprint(video) is None
    _touch(tmp_path, "talk.srt")
    first = sidecar_fingerprint(video)
    assert first is not None and first.startswith("sha256-")
    assert sidecar_fingerprint(video) == first  # stable
    (tmp_path / "talk.srt").write_text(CUE.replace("hello", "hullo"))
    edited = sidecar_fingerprint(video)
    assert edited != first
    _touch(tmp_path, "talk.de.srt")  # a new sidecar may change which one wins
    added = sidecar_fingerprint(video)
    assert added not in (first, edited)
    (tmp_path / "talk.de.srt").rename(tmp_path / "talk.fr.srt")  # same bytes, other name
    assert sidecar_fingerprint(video) != added
    _touch(tmp_path, "unrelated.srt")
    assert sidecar_fingerprint(video) == sidecar_fingerprint(video, find_sidecars(video))
