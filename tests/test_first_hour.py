"""What a new user meets first: short errors from the CLI, the encoder an ingest uses, playable demo
videos, and wording (plurals, no negative zero)."""

from __future__ import annotations

import json

import av
import pytest

from maxsim import Engine, cli
from maxsim.encoders.checkpoint import MissingWeightsError
from maxsim.specs import fmt_num, plural
from maxsim.testing.synthetic import write_video


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def offline_empty_hub(tmp_path, monkeypatch):
    """No weights anywhere and no hub: the default encoder cannot load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.delenv("MAXSIM_DEBUG", raising=False)


def test_ingest_without_weights_is_two_lines_and_exit_2(tmp_path, capsys, offline_empty_hub):
    video = write_video(tmp_path / "video.mp4", [(1.0, "red")])
    code, out, err = run(capsys, "ingest", tmp_path / "my-index", video, "-q")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and "hf download TomoroAI/tomoro-colqwen3-embed-4b" in lines[0]
    assert "huggingface-cli" not in err and "Traceback" not in err
    assert "--encoder color-test" in lines[1]
    assert not (tmp_path / "my-index" / "manifest.json").exists()  # nothing was created


def test_debug_shows_the_traceback(tmp_path, capsys, offline_empty_hub, monkeypatch):
    video = write_video(tmp_path / "video.mp4", [(1.0, "red")])
    with pytest.raises(MissingWeightsError):
        cli.main(["ingest", str(tmp_path / "a"), str(video), "-q", "--debug"])
    with pytest.raises(MissingWeightsError):
        cli.main(["--debug", "ingest", str(tmp_path / "b"), str(video), "-q"])
    monkeypatch.setenv("MAXSIM_DEBUG", "1")
    with pytest.raises(MissingWeightsError):
        cli.main(["ingest", str(tmp_path / "c"), str(video), "-q"])


def test_the_recorded_encoder_is_checked_before_any_weight_is_loaded(tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "video.mp4", [(1.0, "red")])
    idx = tmp_path / "idx"
    Engine(idx, encoder="color-test").ingest([video], progress=False)

    import maxsim.encoders.colqwen2 as colqwen2

    def no_loading(*a, **k):
        raise AssertionError("weights were loaded before the encoder was checked")

    monkeypatch.setattr(colqwen2, "load", no_loading)
    code, out, err = run(capsys, "search", idx, "red", "--encoder", "colqwen2")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "built with encoder 'color-test'" in err and "colqwen2" in err
    with pytest.raises(Exception, match="built with encoder 'color-test'"):
        Engine(idx, encoder="colqwen2+pool(factor=2)")


def test_locked_and_damaged_indexes_are_one_line(tmp_path, capsys):
    idx = tmp_path / "idx"
    Engine(idx, encoder="color-test")
    (idx / "manifest.json").write_text("{not json")
    code, out, err = run(capsys, "info", idx)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ingest_says_which_encoder_ran_and_why(tmp_path, capsys):
    video = write_video(tmp_path / "video.mp4", [(2.0, "red"), (2.0, "blue")])
    idx = tmp_path / "idx"
    code, out, err = run(capsys, "ingest", idx, video, "--encoder", "color-test", "--fixed", "2", "-q")
    assert code == 0 and "encoder color-test (given with --encoder)" in err
    assert "ingested 1 file (2 segments)" in out
    other = write_video(tmp_path / "other.mp4", [(2.0, "green")])
    code, out, err = run(capsys, "ingest", idx, other, "--fixed", "2", "-q")
    assert code == 0 and "encoder color-test (recorded in the index)" in err
    code, out, err = run(capsys, "ingest", idx, other, "--fixed", "2", "-q", "--json")
    report = json.loads(out)
    assert report["encoder"] == "color-test" and report["encoder_source"] == "recorded in the index"
    assert Engine(idx).encoder_source == "recorded in the index"
    assert Engine(idx, encoder="color-test").encoder_source == "given"


def test_search_output_wording(tmp_path, capsys):
    video = write_video(tmp_path / "video.mp4", [(2.0, "red")])
    idx = tmp_path / "idx"
    run(capsys, "ingest", idx, video, "--encoder", "color-test", "-q")
    code, out, err = run(capsys, "search", idx, "a blue scene", "-k", "1")
    assert code == 0 and "(1 segment searched in" in out and "-0.000" not in out


def test_wording_helpers():
    assert plural(1, "segment") == "1 segment" and plural(0, "part") == "0 parts"
    assert plural(2, "index", "indexes") == "2 indexes"
    assert fmt_num(-0.0004) == "0.000" and fmt_num(-0.0006) == "-0.001" and fmt_num(1.23456, 2) == "1.23"


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "h264"), (".webm", "vp9"), (".mov", "h264")])
def test_synthetic_videos_use_codecs_browsers_play(tmp_path, suffix, codec):
    path = write_video(tmp_path / f"v{suffix}", [(1.0, "orange"), (1.0, "blue")], fps=10)
    with av.open(str(path)) as c:
        (stream,) = c.streams.video
        assert stream.codec_context.name == codec
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(frames) == 20
    # near-lossless: the orange and blue scenes keep their colours (the colour-test encoder relies on it)
    assert abs(frames[3][10:20, 60:80].mean((0, 1)) - (240, 140, 20)).max() < 12
    assert abs(frames[15][10:20, 60:80].mean((0, 1)) - (30, 60, 220)).max() < 12


def test_write_video_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "v.gif", [(1.0, "red")])
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "v.mp4", [(1.0, "red")], size=(95, 64))
    assert not (tmp_path / "v.mp4").exists()
