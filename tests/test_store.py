"""The Arrow store: round trip after reopen, memory mapping, atomic commits, clear errors."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from maxsim.errors import IndexFormatError, IndexNotFoundError, LockedError
from maxsim.index import SegmentRecord, Store, read_manifest
from maxsim.index.format import FORMAT_VERSION


def records(rng, n, dim, video="/v/a.mp4"):
    out = []
    for i in range(n):
        n = int(rng.integers(1, 9))
        t = torch.nn.functional.normalize(torch.tensor(rng.standard_normal((n, dim))), dim=1).float()
        out.append(SegmentRecord(video, "h", "s", 2.0 * i, 2.0 * i + 2, [2.0 * i + 0.5], b"\xff\xd8jpg", t))
    return out


def write(store, recs, first_id=0):
    base = store.manifest()
    w = store.new_part()
    for i, r in enumerate(recs):
        w.add(first_id + i, r)
    return store.commit(base, [w.close()], next_segment_id=first_id + len(recs))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_round_trip_after_reopen(tmp_path, dtype, monkeypatch):
    import maxsim.index.parts as parts_mod

    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 200)  # several record batches per part
    rng = np.random.default_rng(0)
    store = Store.create(tmp_path / "idx", {"name": "enc"}, 12, dtype)
    recs = records(rng, 30, 12)
    write(store, recs[:20])
    write(store, recs[20:], first_id=20)

    snap = Store(tmp_path / "idx").snapshot()
    assert snap.manifest.version == 2 and len(snap) == 30 and len(snap.chunks) > 2
    assert snap.table.column("segment_id").to_pylist() == list(range(30))
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    for row, r in enumerate(recs):
        got = snap.segment_tokens(row)
        assert got.dtype == torch_dtype
        torch.testing.assert_close(got.float(), r.tokens.to(torch_dtype).float())
    assert snap.table.column("thumbnail")[3].as_py() == b"\xff\xd8jpg"
    assert snap.table.column("frame_times")[3].as_py() == [6.5]
    # chunks cover every row once, with ragged offsets
    rows = np.concatenate([c.rows for c in snap.chunks])
    assert sorted(rows.tolist()) == list(range(30))
    for c in snap.chunks:
        assert c.offsets[0] == 0 and c.offsets[-1] == c.tokens.shape[0]


def test_tokens_are_memory_mapped(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    write(store, records(np.random.default_rng(1), 5, 8))
    snap = store.snapshot()
    tok_file = str((tmp_path / snap.manifest.parts[0]["tokens"]).resolve())
    ptr = snap.chunks[0].tokens.data_ptr()
    with open("/proc/self/maps") as f:
        spans = [line.split()[0] for line in f if line.rstrip().endswith(tok_file)]
    assert any(int(a, 16) <= ptr < int(b, 16) for a, b in (s.split("-") for s in spans))


def test_uncommitted_part_is_invisible(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    write(store, records(np.random.default_rng(2), 3, 8))
    w = store.new_part()
    for i, r in enumerate(records(np.random.default_rng(3), 4, 8)):
        w.add(100 + i, r)
    w.close()  # files written, manifest untouched: as if the writer died before its commit
    assert len(store.snapshot()) == 3 and store.manifest().version == 1


def test_deleted_rows_not_live(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    man = write(store, records(np.random.default_rng(4), 4, 8))
    store.commit(man, deleted=[1, 2], op="delete")
    snap = store.snapshot()
    assert snap.live.tolist() == [True, False, False, True] and len(snap) == 2
    assert [h["op"] for h in snap.manifest.history] == ["create", "ingest", "delete"]


def test_errors(tmp_path):
    with pytest.raises(IndexNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(IndexNotFoundError, match="manifest.json is missing"):
        read_manifest(tmp_path)
    store = Store.create(tmp_path / "i", {"name": "enc"}, 8)
    with pytest.raises(FileExistsError):
        Store.create(tmp_path / "i", {"name": "enc"}, 8)
    with pytest.raises(ValueError, match="storage dtype"):
        Store.create(tmp_path / "j", {"name": "enc"}, 8, "int3")
    write(store, records(np.random.default_rng(5), 2, 8))
    man = json.loads((tmp_path / "i" / "manifest.json").read_text())

    newer = dict(man, format_version=FORMAT_VERSION + 1)
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(newer))
    with pytest.raises(IndexFormatError, match="newer maxsim"):
        store.snapshot()

    (tmp_path / "i" / "manifest.json").write_text(json.dumps(man))
    (tmp_path / "i" / man["parts"][0]["tokens"]).unlink()
    with pytest.raises(IndexFormatError, match="tokens.arrow"):
        store.snapshot()

    (tmp_path / "i" / man["parts"][0]["segments"]).write_bytes(b"not arrow")
    with pytest.raises(IndexFormatError, match=r"segments.arrow: 9 bytes, but \d+ were written at commit"):
        store.snapshot()
    del man["parts"][0]["checksums"]  # a part written before checksums: Arrow finds the damage
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IndexFormatError, match="not a readable Arrow IPC file"):
        store.snapshot()


def test_one_writer_at_a_time(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    with store.writing():
        with pytest.raises(LockedError, match="another process"):
            with Store(tmp_path).writing():
                pass
    with store.writing():  # released
        pass


def test_commit_refuses_a_stale_base(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    base = store.manifest()
    write(store, records(np.random.default_rng(6), 1, 8))
    with pytest.raises(IndexFormatError, match="moved from version 0 to 1"):
        store.commit(base, deleted=[0])


def test_segment_file_schema(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    man = write(store, records(np.random.default_rng(7), 2, 8))
    t = pa.ipc.open_file(str(tmp_path / man.parts[0]["segments"])).read_all()
    assert {
        "segment_id",
        "video",
        "video_hash",
        "start",
        "end",
        "token_offset",
        "token_count",
        "frame_times",
        "thumbnail",
    } <= set(t.column_names)


def test_rollback_restores_only_what_changed_since_the_mark(tmp_path):
    store = Store.create(tmp_path, {"name": "enc"}, 8)
    rng = np.random.default_rng(11)
    w = store.new_part()
    nid = 0
    for v in range(50):  # many small videos: a mark must not copy the part's catalog
        for r in records(rng, 1, 8, video=f"/v/{v}.mp4"):
            w.add(nid, r)
            nid += 1
    before = json.loads(json.dumps(w.videos))
    mark = w.mark()
    assert mark.undo == {}
    for r in records(rng, 2, 8, video="/v/3.mp4") + records(rng, 2, 8, video="/v/new.mp4"):
        w.add(nid, r)
        nid += 1
    assert set(mark.undo) == {"/v/3.mp4", "/v/new.mp4"}
    w.rollback(mark)
    assert w.videos == before
    w.mark()
    with pytest.raises(RuntimeError, match="latest mark"):
        w.rollback(mark)
    w.abort()
