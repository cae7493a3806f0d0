"""Index lifecycle at the store level: versions, delete, compaction, garbage collection, locks, disk full,
damaged folders, memory. Fast: synthetic segment records, no video decoding."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maxsim.kernels import maxsim_topk

import maxsim.index.files as files_mod
import maxsim.index.parts as parts_mod
import maxsim.index.snapshot as snapshot_mod
from maxsim.errors import IndexFormatError, IndexWriteError, LockedError, VersionNotFoundError
from maxsim.index import SegmentRecord, Store
from maxsim.index.format import FORMAT_VERSION

DIM = 8


def recs(video, n, seed, digest="h1"):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        raw = torch.tensor(rng.standard_normal((int(rng.integers(1, 6)), DIM)))
        t = torch.nn.functional.normalize(raw, dim=1)
        out.append(SegmentRecord(video, digest, "s", 2.0 * i, 2.0 * i + 2, [2.0 * i], b"jpg", t.float()))
    return out


def ingest(store, videos: dict, replace=()):
    """Write one part with the given {video: records} and commit it (replacing ``replace`` videos)."""
    with store.writing():
        base = store.manifest()
        w = store.new_part(base)
        nid = base.next_segment_id
        for rs in videos.values():
            for r in rs:
                w.add(nid, r)
                nid += 1
        return store.commit(base, [w.close()], delete_videos=list(replace), next_segment_id=nid)


def delete(store, videos):
    with store.writing():
        return store.commit(store.manifest(), delete_videos=list(videos), op="delete")


def live_rows(snap):
    """{(video, start): token tensor} of the live rows of a snapshot."""
    out = {}
    vids = snap.table.column("video").to_pylist()
    for row in np.flatnonzero(snap.live):
        key = (vids[row], float(snap.starts[row]))
        assert key not in out
        out[key] = snap.segment_tokens(row).float()
    return out


def part_files(root):
    return sorted(p.name for p in (root / "parts").iterdir()) if (root / "parts").exists() else []


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "idx", {"name": "enc"}, DIM)


def test_versions_are_kept_and_openable(store):
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    ingest(store, {"/v/b": recs("/v/b", 2, 2)})
    delete(store, ["/v/a"])
    assert store.versions() == [0, 1, 2, 3]
    assert [len(store.snapshot(v)) for v in range(4)] == [0, 3, 5, 2]
    assert [h["op"] for h in store.manifest().history] == ["create", "ingest", "ingest", "delete"]
    assert sorted(store.manifest(1).videos) == ["/v/a"]
    with pytest.raises(VersionNotFoundError, match="no version 9"):
        store.snapshot(9)
    with store.writing():
        store.collect_garbage(keep_versions=2)
    assert store.versions() == [2, 3]
    with pytest.raises(VersionNotFoundError, match="no longer kept"):
        store.snapshot(1)
    assert len(store.snapshot(2)) == 5  # its parts were kept


def test_delete_reads_no_part_file(store, monkeypatch):
    ingest(store, {"/v/a": recs("/v/a", 40, 1), "/v/b": recs("/v/b", 5, 2)})
    before = store.manifest()

    def no_reading(*a, **k):
        raise AssertionError("a delete must not open segment or token files")

    monkeypatch.setattr(snapshot_mod, "open_ipc", no_reading)
    monkeypatch.setattr(files_mod.pa, "memory_map", no_reading)
    man = delete(store, ["/v/a"])
    monkeypatch.undo()
    # one tombstone range for the 40 segments of the video: the manifest does not grow with its rows
    assert man.deleted == [before.videos["/v/a"]["ranges"][0]] and man.n_deleted == 40
    assert sorted(man.videos) == ["/v/b"] and len(store.snapshot()) == 5
    with pytest.raises(KeyError, match="not in the index"):
        delete(store, ["/v/a"])


def test_replace_in_one_commit(store):
    ingest(store, {"/v/a": recs("/v/a", 4, 1), "/v/b": recs("/v/b", 2, 2)})
    new_a = recs("/v/a", 3, 7, digest="h2")
    man = ingest(store, {"/v/a": new_a}, replace=["/v/a"])
    assert man.videos["/v/a"]["hash"] == "h2" and man.videos["/v/a"]["segments"] == 3
    rows = live_rows(store.snapshot())
    assert len(rows) == 5
    for r in new_a:
        torch.testing.assert_close(rows[("/v/a", r.start)], r.tokens.half().float())


def test_compaction_merges_drops_and_keeps_old_readers_working(store, monkeypatch):
    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 300)  # several record batches per part
    for i in range(5):
        ingest(store, {f"/v/{i}": recs(f"/v/{i}", 6, i)})
    delete(store, ["/v/1", "/v/3"])
    old = store.snapshot()
    want = live_rows(old)
    old_files = part_files(store.root)
    with store.writing():
        rep = store.compact(keep_versions=1)
    assert rep.parts_before == 5 and rep.parts_after == 1 and rep.segments_dropped == 12
    man = store.manifest()
    assert man.deleted == [] and man.n_segments == 18 and rep.version == man.version
    got = live_rows(store.snapshot())
    assert got.keys() == want.keys()
    for key, t in want.items():
        torch.testing.assert_close(got[key], t, rtol=0, atol=0)
    # keep_versions=1: the files of older versions are gone, yet the snapshot opened before still reads
    assert not set(old_files) & set(part_files(store.root))
    for key, t in live_rows(old).items():
        torch.testing.assert_close(want[key], t, rtol=0, atol=0)
    assert store.versions() == [man.version]
    # the ids are kept: deleting after compaction still works from the catalog
    delete(store, ["/v/4"])
    assert len(store.snapshot()) == 12
    with store.writing():  # a part that is not small with few deleted rows stays, unless full
        assert store.compact(target_part_bytes=1, min_dead_fraction=0.9).version is None
        assert store.compact(full=True).segments_dropped == 6


def test_compaction_only_rewrites_what_needs_it(store):
    ingest(store, {"/v/big": recs("/v/big", 50, 1)})
    ingest(store, {"/v/s1": recs("/v/s1", 2, 2)})
    ingest(store, {"/v/s2": recs("/v/s2", 2, 3)})
    big_part = store.manifest().parts[0]["id"]
    nbytes = store.manifest().parts[0]["token_bytes"]
    with store.writing():
        rep = store.compact(target_part_bytes=nbytes)  # the big part is not small and has nothing deleted
    parts = store.manifest().parts
    assert rep.parts_rewritten == 2 and [p["id"] for p in parts][0] == big_part and len(parts) == 2


def test_dead_writer_leftovers_are_cleaned_on_next_writer_open(store, caplog):
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    committed = set(part_files(store.root))
    # leftovers as a writer killed at various points leaves them
    w = store.new_part()
    w.add(100, recs("/v/x", 1, 5)[0])
    w.flush()  # an unfinished part (never closed)
    w2 = store.new_part()
    w2.add(200, recs("/v/y", 1, 6)[0])
    w2.close()  # a finished but uncommitted part
    (store.root / ".manifest.json.0123456789abcdef0123456789abcdef.tmp").write_text("{")
    (store.root / "manifests" / "v000000002.json").write_text("{}")  # written, never committed
    (store.root / "parts" / "notes.txt").write_text("mine")  # a foreign file
    (store.root / "README").write_text("mine too")
    assert len(store.snapshot()) == 3  # none of it is visible
    with caplog.at_level(logging.WARNING, logger="maxsim.store"), store.writing():
        pass
    assert set(part_files(store.root)) == committed | {"notes.txt"}
    assert not list(store.root.glob(".*.tmp")) and store.versions() == [0, 1]
    assert (store.root / "README").exists() and "parts/notes.txt" in caplog.text
    assert len(store.snapshot()) == 3 and store.manifest().version == 1


def test_lock_held_by_a_killed_writer_is_released(store):
    code = textwrap.dedent(f"""
        import os, signal, sys
        from maxsim.index import Store
        with Store({str(store.root)!r}).writing():
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        msg = rf"another process is writing to this index \(held by pid {p.pid}"
        with pytest.raises(LockedError, match=msg):
            with store.writing():
                pass
        assert len(store.snapshot()) == 0  # readers do not wait for the writer
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with store.writing():  # the OS released the dead writer's lock
        pass


class FullDisk:
    """A file that takes ``budget`` bytes in all (shared budget), then fails like a full disk."""

    def __init__(self, f, budget):
        self.f, self.budget = f, budget

    def write(self, b):
        n = memoryview(b).nbytes
        if n > self.budget[0]:  # a short write then ENOSPC, as write(2) on a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget[0] -= n
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def bytes_written(tmp_path, monkeypatch):
    """Bytes the write of test_disk_full takes when the disk has room, and the manifest's share."""
    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 400)
    store = Store.create(tmp_path / "probe", {"name": "enc"}, DIM)
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    real, sizes = files_mod.open_sink, []

    class Counting(FullDisk):
        def write(self, b):
            sizes.append(memoryview(b).nbytes)
            return self.f.write(b)

    monkeypatch.setattr(files_mod, "open_sink", lambda path: Counting(real(path), None))
    ingest(store, {"/v/b": recs("/v/b", 60, 2)})
    monkeypatch.setattr(files_mod, "open_sink", real)
    return sum(sizes), len((store.root / "manifest.json").read_bytes())


@pytest.mark.parametrize("where", [0.0, 0.001, 0.2, 0.5, 0.8, "version file", "manifest"])
def test_disk_full_leaves_the_committed_index_intact(store, tmp_path, monkeypatch, where):
    total, manifest_bytes = bytes_written(tmp_path, monkeypatch)
    if where == "version file":  # the parts fit, the new version's file does not
        budget = total - 2 * manifest_bytes + manifest_bytes // 2
    elif where == "manifest":  # everything but the new manifest.json fits
        budget = total - manifest_bytes // 2
    else:
        budget = int(total * where)
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    before = live_rows(store.snapshot())
    files_before = part_files(store.root)
    real, left = files_mod.open_sink, [budget]  # one budget for all files: the disk's free space
    monkeypatch.setattr(files_mod, "open_sink", lambda path: FullDisk(real(path), left))
    with pytest.raises(IndexWriteError) as info:
        ingest(store, {"/v/b": recs("/v/b", 60, 2)})
    e = info.value
    assert "no space left on device" in str(e) and "unchanged at version 1" in str(e)
    assert e.errno == errno.ENOSPC and str(store.root) in str(e)
    monkeypatch.setattr(files_mod, "open_sink", real)
    # the failure hit where it was meant to: the new version's file exists only when the manifest failed
    assert (store.root / "manifests" / "v000000002.json").exists() == (where == "manifest")
    if where in ("version file", "manifest"):  # after the new part was written in full
        assert len(part_files(store.root)) == len(files_before) + 2
    assert store.manifest().version == 1
    assert live_rows(store.snapshot()).keys() == before.keys()
    with store.writing():  # the next writer leaves no trace of the failed one
        pass
    assert part_files(store.root) == files_before and not list(store.root.rglob("*.tmp"))
    assert store.versions() == [0, 1]
    ingest(store, {"/v/b": recs("/v/b", 2, 2)})  # and writing works again
    assert len(store.snapshot()) == 5


def test_damaged_and_foreign_folders_give_clear_errors(store):
    man = ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    (store.root / "parts" / "x.tmp").write_text("junk")
    (store.root / "notes.md").write_text("a user's notes")
    assert len(store.snapshot()) == 3  # unknown files do not break opening
    (store.root / man.parts[0]["tokens"]).unlink()
    msg = r"tokens.arrow: listed in the manifest of version 1 but missing"
    with pytest.raises(IndexFormatError, match=msg):
        store.snapshot()
    assert len(store.snapshot(0)) == 0  # an older version that does not need the file still opens
    (store.root / "manifest.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(IndexFormatError, match="not a valid manifest"):
        store.snapshot()
    (store.root / "manifest.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(IndexFormatError, match="not a maxsim manifest"):
        store.snapshot()


def test_commit_needs_writes_to_be_serialised(store):
    with pytest.raises(RuntimeError, match="writer lock"):
        store.compact()
    with pytest.raises(RuntimeError, match="writer lock"):
        store.collect_garbage()


def test_rows_of_a_failed_video_stay_dead_after_partial_compaction(store, monkeypatch):
    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 1)  # every add is flushed, as on a long video
    ingest_then_fail(store, "/v/a", recs("/v/a", 20, 1), [])
    ingest(store, {"/v/c": recs("/v/c", 1, 3)})
    ingest(store, {"/v/d": recs("/v/d", 1, 4)})
    big = store.manifest().parts[0]["token_bytes"]
    with store.writing():  # the first part (with the dead rows) is kept, the two small ones merged
        rep = store.compact(target_part_bytes=big * 2, min_dead_fraction=0.5)
    assert rep.parts_rewritten == 2 and rep.parts_after == 2
    snap = store.snapshot()
    assert len(snap) == 22 and store.manifest().n_deleted == 6
    live = set(np.asarray(snap.table.column("video").to_pylist())[snap.live])
    assert live == {"/v/a", "/v/c", "/v/d"}


# -- incremental == rebuild (store level) ---------------------------------------------------------------
VIDEOS = [f"/v/{c}" for c in "abcd"]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.sampled_from(VIDEOS), st.integers(0, 2)),
        # the video, then (in the same part) a video that fails after some of its rows were flushed
        st.tuples(st.just("ingest_then_fail"), st.sampled_from(VIDEOS), st.integers(0, 2)),
        st.tuples(st.just("delete"), st.sampled_from(VIDEOS), st.just(0)),
        # full, or partial with a target size that leaves some parts as they are
        st.tuples(st.just("compact"), st.sampled_from([None, 64, 400]), st.booleans()),
    ),
    max_size=10,
)


def ingest_then_fail(store, video, content, replace):
    """One part: ``video``'s records, then a failing video's records, flushed, then rolled back."""
    with store.writing():
        base = store.manifest()
        w = store.new_part(base)
        nid = base.next_segment_id
        for r in content:
            w.add(nid, r)
            nid += 1
        mark = w.mark()
        for r in recs("/v/failed", 6, 99):
            w.add(nid, r)
            nid += 1
        assert w._batch > mark.n_flushes  # some of its rows reached the files
        w.rollback(mark)
        part = w.close()
        assert part["dead"] and part["max_id"] == nid - 1  # the id span covers the dead rows
        return store.commit(base, [part], delete_videos=list(replace), next_segment_id=nid)


def variant(video, arg):
    """Records of content variant ``arg`` of a video (the same for the same arguments, in any process)."""
    return recs(video, 2 + arg, zlib.crc32(f"{video}{arg}".encode()) % 1000, digest=f"h{arg}")


def scores_by_key(snap, q):
    if not len(snap):
        return {}
    vids = snap.table.column("video").to_pylist()
    out = {}
    for ch in snap.chunks:
        s, idx = maxsim_topk(q, torch.tensor([0, q.shape[0]]), ch.tokens, ch.offsets, len(ch.rows))
        for score, i in zip(s[0].tolist(), idx[0].tolist(), strict=True):
            row = int(ch.rows[i])
            if snap.live[row]:
                out[(vids[row], float(snap.starts[row]))] = score
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_incremental_equals_rebuild_store_level(tmp_path_factory, ops):
    root = tmp_path_factory.mktemp("inc")
    store = Store.create(root / "idx", {"name": "enc"}, DIM)
    parts_mod.BATCH_BYTES, saved = 200, parts_mod.BATCH_BYTES
    try:
        model: dict[str, int] = {}  # video -> content variant
        for op, video, arg in ops:
            if op in ("ingest", "ingest_then_fail"):
                if model.get(video) == arg:
                    continue  # same content: the engine skips it
                replace = [video] if video in model else []
                if op == "ingest":
                    ingest(store, {video: variant(video, arg)}, replace=replace)
                else:
                    ingest_then_fail(store, video, variant(video, arg), replace)
                model[video] = arg
            elif op == "delete" and video in model:
                delete(store, [video])
                del model[video]
            elif op == "compact":
                with store.writing():
                    if video is None:
                        store.compact(full=arg, keep_versions=2)
                    else:
                        # parts with dead rows stay as they are unless mostly dead
                        store.compact(target_part_bytes=video, min_dead_fraction=0.9, full=arg,
                                      keep_versions=2)
        fresh = Store.create(root / "fresh", {"name": "enc"}, DIM)
        if model:
            ingest(fresh, {v: variant(v, a) for v, a in model.items()})
        q = torch.nn.functional.normalize(torch.tensor(np.random.default_rng(0).standard_normal((3, DIM))), 1)
        got, want = scores_by_key(store.snapshot(), q.float()), scores_by_key(fresh.snapshot(), q.float())
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-5)
        assert sorted(store.manifest().videos) == sorted(model)
        assert store.manifest().n_segments == sum(2 + a for a in model.values())
    finally:
        parts_mod.BATCH_BYTES = saved


# -- memory ---------------------------------------------------------------------------------------------
def test_open_and_search_do_not_load_the_index_into_ram(tmp_path):
    """A 256 MiB index: opening and searching it grows anonymous memory by a small fraction of that."""
    dim, n_tok, per_seg = 128, 1 << 20, 256
    store = Store.create(tmp_path / "big", {"name": "enc"}, dim)
    rng = np.random.default_rng(0)
    with store.writing():
        base = store.manifest()
        w = store.new_part(base)
        block = torch.from_numpy(rng.standard_normal((per_seg * 64, dim)).astype(np.float16))
        for i in range(n_tok // per_seg):
            j = i % 64
            w.add(i, SegmentRecord(f"/v/{i // 100}", "h", "s", i, i + 1, [i], None,
                                   block[j * per_seg : (j + 1) * per_seg]))
        store.commit(base, [w.close()], next_segment_id=n_tok // per_seg)
    size = sum(f.stat().st_size for f in (tmp_path / "big" / "parts").iterdir())
    assert size > 256 << 20
    code = textwrap.dedent(f"""
        import torch
        from maxsim.index import Store
        from maxsim.kernels import maxsim_topk

        def anon():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

        torch.set_num_threads(1)
        q = torch.nn.functional.normalize(torch.randn(8, {dim}), dim=1)
        maxsim_topk(q, torch.tensor([0, 8]), q, torch.tensor([0, 8]), 1)  # warm up torch's allocations
        a0 = anon()
        snap = Store({str(tmp_path / "big")!r}).snapshot()
        a1 = anon()
        for ch in snap.chunks:
            maxsim_topk(q, torch.tensor([0, 8]), ch.tokens, ch.offsets, 10)
        a2 = anon()
        print(a1 - a0, a2 - a0, len(snap))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=300)
    opened, searched, n = map(int, out.stdout.split())
    mib = f"index {size >> 20} MiB: anonymous memory +{opened >> 20} MiB open, +{searched >> 20} MiB search"
    print(mib)
    assert n == n_tok // per_seg
    assert opened < size * 0.05, mib
    assert searched < size * 0.25, mib


def test_lock_file_is_not_inherited_by_exec(tmp_path):
    store = Store.create(tmp_path / "i", {"name": "enc"}, DIM)
    with store.writing():
        # a program the writer starts (ffmpeg, say) must not keep the lock alive after the writer dies
        out = subprocess.run(["ls", "-l", "/proc/self/fd"], capture_output=True, text=True).stdout
        assert str(store.root / "LOCK") not in out
    assert os.path.exists(store.root / "LOCK")


def test_a_reader_racing_garbage_collection_retries_on_the_new_version(store, monkeypatch):
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    stale = store.manifest()
    ingest(store, {"/v/b": recs("/v/b", 2, 2)})
    with store.writing():
        store.compact(full=True, keep_versions=1)  # the files of version 1 are gone
    with pytest.raises(IndexFormatError, match="missing"):
        snapshot_mod.Snapshot(store.root, stale)
    real, calls = Store.manifest, []

    def first_stale(self, version=None):
        calls.append(version)
        return stale if len(calls) == 1 else real(self, version)

    monkeypatch.setattr(Store, "manifest", first_stale)
    snap = store.snapshot()  # read the manifest, then a writer collected its files: it retries
    assert snap.version == 3 and len(snap) == 5 and len(calls) >= 2


def test_an_index_without_a_catalog_still_opens_and_deletes(store):
    ingest(store, {"/v/a": recs("/v/a", 3, 1), "/v/b": recs("/v/b", 2, 2)})
    path = store.root / "manifest.json"
    data = json.loads(path.read_text())
    del data["videos"]
    data["deleted"] = [0]  # the first format: a plain list of deleted segment ids
    data["format_version"] = 1
    path.write_text(json.dumps(data))
    snap = store.snapshot()
    assert len(snap) == 4 and snap.manifest.videos["/v/a"]["segments"] == 2
    man = delete(store, ["/v/a"])
    assert sorted(man.videos) == ["/v/b"] and len(store.snapshot()) == 2
    assert man.format_version == FORMAT_VERSION and man.deleted == [[0, 3]]


def test_a_damaged_manifest_names_the_copy_to_recover_from(store):
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    good = (store.root / "manifests" / "v000000001.json").read_text()
    (store.root / "manifest.json").write_text('{"format_version": 1, "trunc')
    msg = r"not a valid manifest .* copy the newest one over it \(cp .*v000000001.json"
    with pytest.raises(IndexFormatError, match=msg):
        store.snapshot()
    (store.root / "manifest.json").write_text(good)
    assert len(store.snapshot()) == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_a_read_only_index_reads_and_refuses_writes_clearly(store):
    ingest(store, {"/v/a": recs("/v/a", 3, 1)})
    for p in (store.root, store.root / "parts", store.root / "manifests"):
        p.chmod(0o555)
    (store.root / "LOCK").chmod(0o444)
    try:
        assert len(Store(store.root).snapshot()) == 3
        with pytest.raises(IndexWriteError, match="cannot write to this index"):
            with store.writing():
                pass
    finally:
        for p in (store.root, store.root / "parts", store.root / "manifests"):
            p.chmod(0o755)
