"""The maxsim command: ``maxsim.cli.main`` in-process, and once in a subprocess as a user runs it."""

import json
import subprocess
import sys

import pytest

from maxsim import cli
from maxsim.testing.synthetic import write_video

ENC = "tests.color_encoder:ColorEncoder"


def run(capsys, *args):
    """``maxsim ARGS`` in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_search_info(tmp_path, capsys, request):
    vids = tmp_path / "videos"
    write_video(vids / "one.mp4", [(2.0, "red"), (2.0, "cyan")])
    write_video(vids / "sub" / "two.mp4", [(3.0, "cyan"), (1.0, "white")])
    idx = tmp_path / "idx"
    code, out, err = run(capsys, "ingest", idx, vids, "--fixed", "2", "--encoder", ENC, "-q")
    assert code == 0, err
    assert "ingested 2 files" in out

    code, out, err = run(capsys, "search", idx, "cyan", "-k", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and {"video", "start", "end", "score", "segment_id", "best_time"} <= set(hits[0])
    # exactly the three 2 s segments that show cyan (the best frame of each is all cyan)
    got = {(h["video"].rsplit("/", 1)[-1], h["start"], h["end"]) for h in hits}
    assert got == {("one.mp4", 2.0, 4.0), ("two.mp4", 0.0, 2.0), ("two.mp4", 2.0, 4.0)}
    code, out, _ = run(capsys, "search", idx, "cyan white", "-k", "1", "--json")
    (top,) = json.loads(out)
    assert top["video"].endswith("two.mp4") and (top["start"], top["end"]) == (2.0, 4.0)  # both colours
    code, out, _ = run(capsys, "search", idx, "white", "-k", "1")
    assert code == 0 and "two.mp4" in out and "2.00-4.00" in out.replace(" ", "")

    code, out, _ = run(capsys, "info", idx, "--json")
    info = json.loads(out)
    assert info["videos"] == 2 and info["segments"] == 4 and info["version"] == 1
    assert info["encoder"]["name"] == "test-color"
    code, out, _ = run(capsys, "info", idx)
    assert "history" in out and "ingest" in out

    # the encoder comes from the index
    code, out, _ = run(capsys, "ingest", idx, vids / "one.mp4", "--fixed", "2", "-q")
    assert code == 0 and "skipped 1" in out

    # The installed command itself, once, in a fresh interpreter.
    r = subprocess.run(
        [sys.executable, "-m", "maxsim.cli", "search", str(idx), "red", "-k", "1", "--json"],
        cwd=request.config.rootpath, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (top,) = json.loads(r.stdout)
    assert top["video"].endswith("one.mp4") and (top["start"], top["end"]) == (0.0, 2.0)


def test_failures_set_the_exit_code(tmp_path, capsys):
    good = write_video(tmp_path / "good.mp4", [(2.0, "red")])
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    missing = tmp_path / "missing.mp4"
    code, out, _ = run(capsys, "ingest", tmp_path / "idx", good, bad, missing, "--encoder", ENC, "-q")
    assert code == 1
    assert "bad.mp4" in out and "missing.mp4" in out and "ingested 1 file" in out


@pytest.mark.parametrize("command", ["search", "info"])
def test_missing_index(tmp_path, capsys, command):
    code, _, err = run(capsys, command, tmp_path / "nope", *(["red"] if command == "search" else []))
    assert code == 2 and "no index at" in err


def test_ingest_max_side_sets_the_frame_size(tmp_path, capsys):
    from maxsim import Engine

    video = write_video(tmp_path / "v.mp4", [(2.0, "red")])
    idx = tmp_path / "idx"
    code, out, err = run(capsys, "ingest", idx, video, "--encoder", ENC, "--max-side", "32", "-q")
    assert code == 0, err
    (entry,) = Engine(idx, encoder=ENC).manifest.videos.values()
    assert "max_side=32" in entry["settings"]
    code, _, err = run(capsys, "ingest", idx, video, "--encoder", ENC, "--max-side", "8", "-q")
    assert code == 2 and "max_side must be at least 16" in err
