"""The maxsim command end to end, in a subprocess like a user runs it."""

import json
import subprocess
import sys

import pytest

from maxsim.synthetic import write_video

ENC = "tests.color_encoder:ColorEncoder"


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "maxsim.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def repo_root(request):
    return request.config.rootpath


def test_ingest_search_info(tmp_path, repo_root):
    vids = tmp_path / "videos"
    write_video(vids / "one.mp4", [(2.0, "red"), (2.0, "cyan")])
    write_video(vids / "sub" / "two.mp4", [(3.0, "cyan"), (1.0, "white")])
    idx = tmp_path / "idx"
    r = run("ingest", idx, vids, "--fixed", "2", "--encoder", ENC, "-q", cwd=repo_root)
    assert r.returncode == 0, r.stderr
    assert "ingested 2 file(s)" in r.stdout

    r = run("search", idx, "cyan", "-k", "3", "--json", cwd=repo_root)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 3 and {"video", "start", "end", "score", "segment_id", "best_time"} <= set(hits[0])
    assert (hits[0]["video"].endswith("one.mp4") and hits[0]["start"] == 2.0) or hits[0]["video"].endswith(
        "two.mp4"
    )
    r = run("search", idx, "white", "-k", "1", cwd=repo_root)
    assert r.returncode == 0 and "two.mp4" in r.stdout and "2.00-4.00" in r.stdout.replace(" ", "")

    r = run("info", idx, "--json", cwd=repo_root)
    info = json.loads(r.stdout)
    assert info["videos"] == 2 and info["segments"] == 4 and info["version"] == 1
    assert info["encoder"]["name"] == "test-color"
    r = run("info", idx, cwd=repo_root)
    assert "history" in r.stdout and "ingest" in r.stdout

    r = run("ingest", idx, vids / "one.mp4", "--fixed", "2", "-q", cwd=repo_root)  # encoder from the index
    assert r.returncode == 0 and "skipped 1" in r.stdout


def test_failures_set_the_exit_code(tmp_path, repo_root):
    good = write_video(tmp_path / "good.mp4", [(2.0, "red")])
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    r = run(
        "ingest", tmp_path / "idx", good, bad, tmp_path / "missing.mp4", "--encoder", ENC, "-q", cwd=repo_root
    )
    assert r.returncode == 1
    assert "bad.mp4" in r.stdout and "missing.mp4" in r.stdout and "ingested 1 file(s)" in r.stdout


def test_missing_index_and_missing_encoder(tmp_path, repo_root):
    r = run("search", tmp_path / "nope", "red", cwd=repo_root)
    assert r.returncode == 2 and "no index at" in r.stderr
    r = run("info", tmp_path / "nope", cwd=repo_root)
    assert r.returncode == 2 and "no index at" in r.stderr
