"""Speech recognition plumbing with a tiny random Whisper built in the test: audio decoded with PyAV,
long-form generation with timestamps, cues on the video's time line. The words are noise; the times and
types are checked."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from maxsim.transcripts import (  # noqa: E402
    Cue,
    encoder_record,
    load_recorded,
    load_speech_recognizer,
    load_transcript,
    registered_speech_recognizers,
)
from maxsim.transcripts.asr import WhisperTranscriber  # noqa: E402
from maxsim.transcripts.audio import load_audio  # noqa: E402
from tests.subtitle_media import Track, write_media  # noqa: E402
from tests.tiny_whisper import build_tiny_whisper  # noqa: E402


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return load_speech_recognizer(str(whisper_dir), device="cpu", local_files_only=True)


def _check_cues(cues: list[Cue], start: float, end: float, some: bool = True) -> None:
    assert cues or not some, "the random model produced no segment"
    for c in cues:
        assert isinstance(c.text, str) and c.text == c.text.strip() and c.text
        assert start - 1e-6 <= c.start <= c.end <= end + 1e-6
    starts = [c.start for c in cues]
    assert starts == sorted(starts)


def test_loading_names_and_record(whisper, whisper_dir):
    assert "whisper" in registered_speech_recognizers()
    assert isinstance(whisper, WhisperTranscriber)
    assert not whisper.model.use_kernels  # Hub kernels stay off: loads run installed code only
    assert whisper.name.startswith("whisper:tiny-whisper@sha256-")
    assert whisper.spec == str(whisper_dir)
    german = load_speech_recognizer(f"whisper:{whisper_dir}(language=de,num_beams=2)", device="cpu")
    assert german.language == "de" and german.settings["num_beams"] == 2
    assert german.spec == f"whisper:{whisper_dir}(language=de,num_beams=2)"
    rec = encoder_record(german)
    assert rec["settings"]["language"] == "de" and rec["revision"].startswith("sha256-")
    again = load_recorded(rec, kind="speech", device="cpu")
    assert again.name == german.name and again.language == "de"
    with pytest.raises(ValueError, match="unknown option 'beams'"):
        load_speech_recognizer("whisper(beams=2)")
    with pytest.raises(ValueError, match="only Whisper checkpoints"):
        load_speech_recognizer("facebook/wav2vec2-base")
    with pytest.raises(ValueError, match="task must be one of"):
        german.with_settings(task="summarise")


@pytest.mark.parametrize("seconds", [7.0, 65.0])
def test_transcribe_samples_short_and_long_form(whisper, seconds):
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    cues = whisper.with_settings(language="en").transcribe(audio, 16000, offset=100.0)
    _check_cues(cues, 100.0, 100.0 + seconds)
    if seconds > 30:  # long-form: windows after the first one were decoded too
        assert max(c.end for c in cues) > 100.0 + 30.0
    assert whisper.transcribe(np.zeros(0, np.float32)) == []
    with pytest.raises(ValueError, match="takes audio at 16000 Hz"):
        whisper.transcribe(audio, 44100)


def test_transcribe_a_video_file(whisper, tmp_path):
    path = write_media(tmp_path / "talk.mkv", [], video_s=4.0, audio_s=40.0)
    block = load_audio(path)
    cues = whisper.with_settings(block_s=30.0).transcribe_file(path)
    _check_cues(cues, 0.0, block.end)
    assert any(c.start >= 30.0 - 1e-6 for c in cues) or max(c.end for c in cues) > 30.0  # the second block


def test_speech_is_the_last_resort(whisper, tmp_path):
    subtitled = write_media(tmp_path / "subs.mkv", [Track("subrip", [(0.5, 1.0, "said in a subtitle")])],
                            audio_s=3.0)
    t = load_transcript(subtitled, speech=whisper)
    assert t is not None and t.source == "embedded" and t.cues[0].text == "said in a subtitle"
    plain = write_media(tmp_path / "plain.mkv", [], audio_s=3.0)
    assert load_transcript(plain) is None  # speech is never the default
    t = load_transcript(plain, speech=whisper)
    assert t is not None and t.source == "speech" and t.origin == whisper.name
    _check_cues(list(t.cues), 0.0, 3.2, some=False)  # random timestamps past 3 s are dropped
    silent = write_media(tmp_path / "silent.mkv", [])
    assert load_transcript(silent, speech=whisper) is None  # no audio stream
