"""How the engine takes paths: one path or several, folders, unreadable entries, one key per video."""

import os
import shutil

import pytest

from maxsim import Engine
from maxsim.ingest import expand_paths
from maxsim.testing.synthetic import write_video
from maxsim.types import video_key
from tests.color_encoder import ColorEncoder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "a.mp4", [(2.0, "red"), (2.0, "blue")], seed=1)


def new_engine(path):
    return Engine(path, encoder=ColorEncoder(), segmenter="fixed:2")


def test_one_path_as_a_string_is_one_video(tmp_path, clip, monkeypatch):
    walked = []
    real_walk = os.walk
    monkeypatch.setattr(os, "walk", lambda top, **kw: walked.append(str(top)) or real_walk(top, **kw))
    eng = new_engine(tmp_path / "idx")
    rep = eng.ingest(str(clip), progress=False)  # not its characters: "/" would walk the whole disk
    assert rep.ingested == [str(clip)] and not rep.failed and walked == []
    assert eng.videos() == [video_key(clip)]
    assert eng.delete_where(videos=str(clip)) == {video_key(clip): 2}
    rep = eng.ingest(clip, progress=False)  # a PathLike too
    assert rep.ingested == [str(clip)]
    assert eng.delete_where(videos=clip) == {video_key(clip): 2}


def test_a_folder_as_a_string(tmp_path, clip):
    lib = tmp_path / "lib" / "sub"
    lib.mkdir(parents=True)
    shutil.copyfile(clip, lib / "b.MP4")
    (lib / "notes.txt").write_text("not a video")
    assert expand_paths(str(tmp_path / "lib")) == [str(lib / "b.MP4")]
    eng = new_engine(tmp_path / "idx")
    assert eng.ingest(str(tmp_path / "lib"), progress=False).ingested == [str(lib / "b.MP4")]


def test_an_unreadable_folder_is_reported_and_the_rest_ingests(tmp_path, clip, monkeypatch):
    lib = tmp_path / "lib"
    (lib / "locked").mkdir(parents=True)
    (lib / "open").mkdir()
    shutil.copyfile(clip, lib / "locked" / "x.mp4")
    shutil.copyfile(clip, lib / "open" / "y.mp4")
    real_scandir = os.scandir

    def scandir(path="."):  # as a folder without read permission behaves (root ignores chmod)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError):
        expand_paths([lib])  # without a list to report into, the error is raised
    eng = new_engine(tmp_path / "idx")
    rep = eng.ingest([lib / "locked", lib], progress=False)
    assert rep.ingested == [str(lib / "open" / "y.mp4")]
    assert [p for p, _ in rep.failed] == [str(lib / "locked")] * 2
    assert all("cannot list folder (Permission denied)" == r for _, r in rep.failed)


def test_a_path_that_cannot_be_resolved_is_reported(tmp_path, clip):
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    eng = new_engine(tmp_path / "idx")
    rep = eng.ingest([loop, clip], progress=False)
    assert rep.ingested == [str(clip)] and [p for p, _ in rep.failed] == [str(loop)]


def test_reingest_skips_unchanged_files_without_hashing(tmp_path, clip, monkeypatch):
    import json

    import maxsim.ingest as ingest_mod

    video = tmp_path / "v.mp4"
    shutil.copyfile(clip, video)
    eng = new_engine(tmp_path / "idx")
    assert eng.ingest(video, progress=False).ingested == [str(video)]
    # written just now: its mtime may not move on a rewrite within the same tick, so it is not recorded
    assert "mtime_ns" not in eng.manifest.videos[video_key(video)]
    eng.delete(video)
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))  # 10 s old
    assert eng.ingest(video, progress=False).ingested == [str(video)]
    entry = eng.manifest.videos[video_key(video)]
    st = video.stat()
    assert (entry["size"], entry["mtime_ns"]) == (st.st_size, st.st_mtime_ns)

    hashed = []
    real_hash = ingest_mod.content_hash
    monkeypatch.setattr(ingest_mod, "content_hash", lambda p: hashed.append(p) or real_hash(p))
    rep = eng.ingest(video, progress=False)
    assert rep.skipped and hashed == []  # same size and mtime: not read

    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: hashed, skipped
    rep = eng.ingest(video, progress=False)
    assert rep.skipped and hashed == [video_key(video)] and rep.version is None

    write_video(video, [(2.0, "green")], seed=3)  # changed: hashed and re-ingested
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))
    hashed.clear()
    rep = eng.ingest(video, progress=False)
    assert rep.ingested == [str(video)] and hashed == [video_key(video)]
    assert eng.manifest.videos[video_key(video)]["size"] == video.stat().st_size

    # an index whose catalog predates size/mtime_ns: every file is hashed, unchanged ones still skipped
    man_path = tmp_path / "idx" / "manifest.json"
    man = json.loads(man_path.read_text())
    for e in man["videos"].values():
        del e["size"], e["mtime_ns"]
    man_path.write_text(json.dumps(man))
    old = new_engine(tmp_path / "idx")
    hashed.clear()
    rep = old.ingest(video, progress=False)
    assert rep.skipped and hashed == [video_key(video)]
