"""Hostile damage to an index: a deleted or broken manifest, manifests that are JSON but wrong inside,
flipped bytes in part files, concurrent creators, retained versions, and the repair and verify commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from maxsim import Engine
from maxsim.cli import main
from maxsim.errors import IndexFormatError, IndexNotFoundError, IndexTooNewError
from maxsim.index import Store, read_manifest
from maxsim.index.format import KEEP_VERSIONS
from maxsim.index.repair import plan_repair, verify_index
from maxsim.testing.synthetic import write_video
from tests.color_encoder import ColorEncoder

ENC = "tests.color_encoder:ColorEncoder"
COLOURS = ("red", "green", "blue", "yellow")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_videos")
    return [write_video(root / f"{c}.mp4", [(2.0, c), (2.0, "white")], seed=i) for i, c in enumerate(COLOURS)]


def _index(tmp_path, videos, commits=2) -> Path:
    """An index of the videos, ingested in ``commits`` commits (one part each)."""
    idx = tmp_path / "idx"
    eng = Engine(idx, encoder=ColorEncoder(), segmenter="fixed:2")
    for chunk in np.array_split(np.arange(len(videos)), commits):
        assert eng.ingest([videos[i] for i in chunk], progress=False).ok
    return idx


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "LOCK"}


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


# -- a deleted manifest.json ----------------------------------------------------------------------------
def test_a_deleted_manifest_is_a_damaged_index_never_a_new_one(tmp_path, videos, capsys):
    idx = _index(tmp_path, videos)
    (idx / "manifest.json").unlink()
    before = _files(idx)
    newest = idx / "manifests" / "v000000002.json"
    with pytest.raises(IndexFormatError, match="manifest.json is missing but the index's files") as e:
        Engine(idx, encoder=ColorEncoder())  # used to create a new index and collect the old one
    assert f"maxsim repair {idx}" in str(e.value) and str(newest) in str(e.value)
    with pytest.raises(IndexFormatError):
        Store.create(idx, {"name": "test-color"}, ColorEncoder.dim)
    assert main(["ingest", str(idx), str(videos[0]), "--encoder", ENC, "-q"]) == 2
    assert main(["search", str(idx), "red"]) == 2
    err = capsys.readouterr().err
    assert "maxsim repair" in err and str(newest) in err
    assert _files(idx) == before  # nothing created, nothing collected

    assert main(["repair", str(idx)]) == 1  # the plan only
    out = capsys.readouterr().out
    assert f"would restore manifest.json from {newest} (version 2)" in out and "--yes" in out
    assert _files(idx) == before
    assert main(["repair", str(idx), "--yes"]) == 0
    eng = Engine(idx, encoder=ColorEncoder())
    assert eng.version == 2 and len(eng.videos()) == 4
    assert eng.search("green", k=1)[0].video.endswith("green.mp4")
    assert main(["repair", str(idx)]) == 0 and "nothing to repair" in capsys.readouterr().out


def test_a_killed_create_is_no_index_and_parts_alone_are_damage(tmp_path, videos):
    half = tmp_path / "half"
    Store.create(half, {"name": "test-color"}, ColorEncoder.dim)
    (half / "manifest.json").unlink()  # killed between the copy of version 0 and the commit point
    with pytest.raises(IndexNotFoundError):
        read_manifest(half)
    assert Engine(half, encoder=ColorEncoder()).version == 0  # created afresh: nothing was lost
    idx = _index(tmp_path, videos)
    (idx / "manifest.json").unlink()
    for f in (idx / "manifests").iterdir():
        f.unlink()
    with pytest.raises(IndexFormatError, match="no copy of a version to restore it from: move"):
        Engine(idx, encoder=ColorEncoder())
    assert plan_repair(idx).unrepairable


def test_repair_skips_copies_whose_parts_are_gone(tmp_path, videos, capsys):
    idx = _index(tmp_path, videos, commits=4)
    man = read_manifest(idx)
    (idx / "manifest.json").write_text('{"format_version": 2, "trunc')  # a damaged commit point
    (idx / man.parts[-1]["tokens"]).unlink()  # and the newest version's last part lost
    plan = plan_repair(idx)
    assert plan.restore == 3 and plan.skipped_copies[0][0] == 4 and "is missing" in plan.skipped_copies[0][1]
    assert main(["repair", str(idx), "--yes"]) == 0
    assert "(not version 4:" in capsys.readouterr().out
    eng = Engine(idx, encoder=ColorEncoder())
    assert eng.version == 3 and len(eng.videos()) == 3  # what version 3 held


# -- manifests that are JSON but wrong inside --------------------------------------------------------------
@pytest.mark.parametrize("change, what", [
    (lambda m: m.update(deleted=[[5, 2]]), "'deleted' must be a list of"),
    (lambda m: m.update(deleted="1-3"), "'deleted' must be a list of"),
    (lambda m: m["parts"][0].pop("tokens"), "must name its 'tokens' file"),
    (lambda m: m["parts"][0].update(tokens="../../etc/passwd"), "must name its 'tokens' file"),
    (lambda m: m["parts"][0].update(n_segments="2"), "'n_segments' must be a whole number"),
    (lambda m: m.update(videos="all of them"), "'videos' must be an object"),
    (lambda m: m["videos"].update({"/x.mp4": {"hash": "h"}}), "catalog entry of '/x.mp4'"),
    (lambda m: m.update(format_version="2"), "format_version must be a whole number"),
    (lambda m: m.update(dim="8"), "'dim' must be a positive whole number"),
    (lambda m: m.update(dtype="float64"), "'dtype' must be one of"),
    (lambda m: m.update(parts={"p": 1}), "'parts' must be a list"),
    (lambda m: m.update(history=[1, 2]), "'history' must be a list of objects"),
    (lambda m: m.pop("encoder"), "missing fields \\(encoder\\)"),
])
def test_a_manifest_wrong_inside_is_an_index_format_error(tmp_path, videos, change, what):
    idx = _index(tmp_path, videos[:2], commits=1)
    path = idx / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=what) as e:
        Engine(idx, encoder=ColorEncoder())
    assert str(path) in str(e.value) and not isinstance(e.value, IndexTooNewError)


# -- checksums: flipped bytes are reported, never scored -------------------------------------------------
def test_flipped_bytes_in_a_token_batch_are_reported_never_scored(tmp_path, videos, capsys):
    idx = _index(tmp_path, videos)
    man = read_manifest(idx)
    part = man.parts[0]
    tokens = idx / part["tokens"]
    (end, _), _footer = part["checksums"]["tokens"]
    eng = Engine(idx, encoder=ColorEncoder())  # opened before the damage: its next search checks first
    _flip(tokens, end // 2)
    with pytest.raises(IndexFormatError, match="do not match the checksum written at commit") as e:
        eng.search("red", k=3)
    assert str(tokens) in str(e.value) and "maxsim repair" in str(e.value)
    fresh = Engine(idx, encoder=ColorEncoder())  # opening stays cheap: the token batches wait for use
    with pytest.raises(IndexFormatError, match="checksum"):
        fresh.search("blue", k=3)
    with pytest.raises(IndexFormatError, match="checksum"):
        fresh.search("blue", k=3, mode="pruned")
    with pytest.raises(IndexFormatError, match="checksum"):
        fresh.compact(full=True)  # damaged bytes are never copied into a part with fresh checksums
    assert read_manifest(idx).version == man.version

    assert main(["verify", str(idx), "-q"]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and str(tokens) in out and "red.mp4" in out
    assert "1 ok, 1 missing or damaged" in out
    report = verify_index(idx)
    lost = sorted(Path(v).name for v in report.bad[0].videos)
    assert lost == ["green.mp4", "red.mp4"]
    assert main(["repair", str(idx), "--yes"]) == 0
    eng = Engine(idx, encoder=ColorEncoder(), segmenter="fixed:2")
    assert sorted(Path(v).name for v in eng.videos()) == ["blue.mp4", "yellow.mp4"]
    assert eng.manifest.n_segments == len(eng) == 4  # no tombstone left over for the removed part
    assert eng.search("blue", k=1)[0].video.endswith("blue.mp4")
    assert main(["verify", str(idx), "-q"]) == 0
    assert eng.ingest(videos, progress=False).ingested == [str(v) for v in videos[:2]]  # restored
    assert len(eng) == 8


def test_a_damaged_segment_table_or_size_fails_at_open(tmp_path, videos):
    idx = _index(tmp_path, videos)
    part = read_manifest(idx).parts[1]
    _flip(idx / part["segments"], 200)
    with pytest.raises(IndexFormatError, match="segments.arrow: bytes .* do not match the checksum"):
        Engine(idx, encoder=ColorEncoder())
    idx2 = _index(tmp_path / "b", videos)
    part = read_manifest(idx2).parts[0]
    with open(idx2 / part["tokens"], "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(IndexFormatError, match="tokens.arrow: .* bytes, but .* were written at commit"):
        Engine(idx2, encoder=ColorEncoder())


def test_parts_without_checksums_still_open_and_compact_full_adds_them(tmp_path, videos, capsys):
    idx = _index(tmp_path, videos)
    path = idx / "manifest.json"
    data = json.loads(path.read_text())
    for p in data["parts"]:
        del p["checksums"]  # as an index written before checksums existed
    path.write_text(json.dumps(data))
    eng = Engine(idx, encoder=ColorEncoder())
    assert eng.snapshot.verified and eng.search("red", k=1)[0].video.endswith("red.mp4")
    assert main(["verify", str(idx), "-q"]) == 0
    assert "2 without checksums" in capsys.readouterr().out
    assert main(["info", str(idx)]) == 0
    assert "0 of 2 parts (2 written by an older maxsim" in capsys.readouterr().out
    eng.compact(full=True)
    assert all(p.get("checksums") for p in read_manifest(idx).parts)
    assert verify_index(idx).ok and not verify_index(idx).unchecked


def test_checksums_cover_every_byte_of_every_batch(tmp_path, monkeypatch):
    import maxsim.index.parts as parts_mod
    from tests.test_store import records, write

    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 200)  # several record batches per part
    store = Store.create(tmp_path / "i", {"name": "enc"}, 12, "int8")
    write(store, records(np.random.default_rng(1), 30, 12))
    part = read_manifest(tmp_path / "i").parts[0]
    for key in ("segments", "tokens"):
        ranges = part["checksums"][key]
        assert ranges[-1][0] == (tmp_path / "i" / part[key]).stat().st_size
    assert len(part["checksums"]["tokens"]) > 3  # one range per batch, then the footer
    snap = store.snapshot()
    assert not snap.verified
    rows = snap.chunks[1].rows
    snap.verify_rows(rows)
    assert not snap.verified  # only what was used is checked
    torch.testing.assert_close(snap.segment_tokens(int(rows[0])), snap.segment_tokens(int(rows[0])))
    snap.verify_chunks()
    assert snap.verified
    data = (tmp_path / "i" / part["tokens"]).read_bytes()
    for i, (start, (end, crc)) in enumerate(zip([0] + [e for e, _ in part["checksums"]["tokens"][:-1]],
                                                part["checksums"]["tokens"], strict=True)):
        assert zlib.crc32(data[start:end]) == crc, i


# -- writers meeting ---------------------------------------------------------------------------------------
def test_concurrent_creators_wait_for_each_other(tmp_path):
    idx = tmp_path / "new"
    made, errors = [], []

    def create(timeout):
        try:
            made.append(Engine(idx, encoder=ColorEncoder(), lock_timeout=timeout).version)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    with Store(idx).writing():  # another creator holds the lock (flock: per open file, so threads too)
        threads = [threading.Thread(target=create, args=(t,)) for t in (0.0, 0.0, 5.0, 30.0)]
        for t in threads:
            t.start()
        time.sleep(0.5)
    for t in threads:
        t.join(30)
    assert not errors and made == [0, 0, 0, 0]
    assert [h["op"] for h in read_manifest(idx).history] == ["create"]  # one creation, the others opened


def test_retained_versions_are_as_many_as_kept(tmp_path, videos, capsys):
    idx = tmp_path / "idx"
    eng = Engine(idx, encoder=ColorEncoder(), segmenter="fixed:2")
    eng.ingest(videos, progress=False)
    for _ in range(6):  # 1 + 12 more commits
        eng.delete(str(videos[0]))
        eng.ingest([videos[0]], progress=False)
    assert eng.version == 13 and eng.versions() == list(range(13 - KEEP_VERSIONS + 1, 14))
    assert main(["info", str(idx), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["versions_kept"]) == KEEP_VERSIONS
    assert eng.compact(keep_versions=2).version is None or len(eng.versions()) == 2


# -- the prune index: a killed rebuild --------------------------------------------------------------------
def test_a_killed_prune_rebuild_leaves_nothing_behind_after_the_next_write(tmp_path, videos, capsys):
    idx = _index(tmp_path, videos, commits=1)
    assert main(["prune", str(idx), "--encoder", ENC, "-q"]) == 0
    named = set(os.listdir(idx / "prune"))
    env = {**os.environ, "MAXSIM_CRASH_AT": "prune_manifest.tmp"}
    code = subprocess.run([sys.executable, "-m", "maxsim.cli", "prune", str(idx), "--rebuild", "-q",
                           "--encoder", ENC], env=env, capture_output=True, timeout=300).returncode
    assert code == -9
    leftovers = set(os.listdir(idx / "prune")) - named
    assert leftovers  # a whole new set of arrays, and the temporary prune manifest
    eng = Engine(idx, encoder=ColorEncoder())
    assert eng.search("red", k=1, mode="pruned")[0].video.endswith("red.mp4")  # readers unaffected
    assert main(["compact", str(idx), "-q"]) == 0  # the next write of any kind collects them
    assert "nothing to compact" in capsys.readouterr().out  # (here a writer that only collects)
    assert set(os.listdir(idx / "prune")) == named


# -- search requests that used to slip through -----------------------------------------------------------
def test_search_requests_are_checked_on_every_front_end(tmp_path, videos, capsys):
    idx = _index(tmp_path, videos, commits=1)
    eng = Engine(idx, encoder=ColorEncoder())
    t0 = time.perf_counter()
    hits = eng.search("red", k=1_000_000_000)  # cut to the live segments, not allocated
    assert len(hits) == len(eng) == 8 and time.perf_counter() - t0 < 10
    with pytest.raises(ValueError, match="NaN"):
        eng.search_vectors([torch.full((2, ColorEncoder.dim), float("nan"))])
    with pytest.raises(ValueError, match="finite"):
        eng.search("red", time_range=(float("nan"), float("nan")))
    with pytest.raises(ValueError, match="n_candidates"):
        eng.search("red", mode="pruned", n_candidates=0)
    with pytest.raises(TypeError, match="text must be a str"):
        eng.search(5)
    with pytest.raises(ValueError, match="nothing to search for"):  # text is optional, but something is not
        eng.search(None)
    with pytest.raises(ValueError, match="k must be an integer"):
        eng.search("red", k=2.5)
    assert main(["search", str(idx), "red", "-k", "1000000000", "--encoder", ENC, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 8
    for argv, what in ((["--time-range", "nan", "nan"], "finite"), (["--pruned", "--candidates", "0"],
                                                                     "n_candidates")):
        assert main(["search", str(idx), "red", "--encoder", ENC, *argv]) == 2
        assert what in capsys.readouterr().err


@pytest.mark.parametrize("device_memory", [None, 1], ids=["resident", "streamed"])
def test_the_device_path_never_scores_damaged_bytes(tmp_path, videos, device_memory):
    """A placed corpus (CPU tensors stand for the GPU here) is checked before its groups are scored."""
    idx = _index(tmp_path, videos)
    part = read_manifest(idx).parts[1]
    (end, _), _footer = part["checksums"]["tokens"]
    eng = Engine(idx, encoder=ColorEncoder(), device="cpu", search_backend="torch",
                 device_memory=device_memory)
    assert eng.searcher.placed
    _flip(idx / part["tokens"], end // 2)  # after placement: the copy came from the damaged bytes
    with pytest.raises(IndexFormatError, match="do not match the checksum"):
        eng.search("red", k=3)
    with pytest.raises(IndexFormatError, match="do not match the checksum"):
        eng.search("red", k=3, mode="pruned")
    assert len(eng.search("red", k=8, videos=[str(videos[0])])) == 2  # a filter that spares the part
