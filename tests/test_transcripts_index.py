"""Transcript cues in the index: written with a part, committed atomically with its segments, read back,
hidden by deletes and replaces, carried by compaction, checked by verify, and old indexes still open."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxsim.errors import IndexFormatError
from maxsim.index import SegmentRecord, Store
from maxsim.index.repair import verify_index

DIM, CUE_DIM = 8, 4


def _rec(video: str, start: float) -> SegmentRecord:
    return SegmentRecord(video=video, video_hash="h" + video, settings="s", start=start, end=start + 2.0,
                         frame_times=[start], thumbnail=None, tokens=torch.randn(3, DIM))


def _ingest(store: Store, video: str, first_id: int, texts: list[str], base=None):
    man = base or store.manifest()
    w = store.new_part(man)
    for i in range(2):
        w.add(first_id + i, _rec(video, 2.0 * i))
    vecs = [torch.nn.functional.normalize(torch.randn(len(t.split()), CUE_DIM), dim=-1) for t in texts]
    w.add_cues(first_id, video, [0.5 + i for i in range(len(texts))], [1.0 + i for i in range(len(texts))],
               texts, [None] * len(texts), vecs)
    replaced = [video] if video in store.catalog(man) else []
    return store.commit(man, [w.close()], delete_videos=replaced, next_segment_id=first_id + 2,
                        transcript={"encoder": {"name": "t"}, "dim": CUE_DIM}), vecs


def test_cues_round_trip_delete_compact_verify(tmp_path):
    store = Store.create(tmp_path / "ix", {"name": "e"}, DIM)
    with store.writing():
        man, vecs = _ingest(store, "a.mp4", 0, ["hello there", "general kenobi"])
        man, _ = _ingest(store, "b.mp4", 2, ["the fat bunny crawls out"])
    assert man.format_version == 4 and man.transcript == {"encoder": {"name": "t"}, "dim": CUE_DIM}
    cues = store.snapshot().cues()
    assert len(cues) == 3 and cues.live.all() and cues.dim == CUE_DIM
    assert [cues.text(i) for i in range(3)] == ["hello there", "general kenobi", "the fat bunny crawls out"]
    assert cues.video(2) == "b.mp4" and cues.starts.tolist() == [0.5, 1.5, 0.5]
    first = cues.vectors[cues.offsets[0]:cues.offsets[1]].float()
    assert torch.allclose(first, vecs[0], atol=2e-3)
    assert verify_index(store.root).ok
    with store.writing():  # replace a.mp4 with new lines: the old ones die with their segments
        man, _ = _ingest(store, "a.mp4", 4, ["a new line"])
        man = store.commit(man, delete_videos=["b.mp4"], op="delete")
    cues = store.snapshot().cues()
    assert [cues.text(i) for i in np.flatnonzero(cues.live)] == ["a new line"]
    with store.writing():
        report = store.compact(full=True, keep_versions=1)
    assert report.version is not None
    man = store.manifest()
    assert len(man.parts) == 1 and man.parts[0]["n_cues"] == 1
    cues = store.snapshot().cues()
    assert len(cues) == 1 and cues.live.all() and cues.text(0) == "a new line"
    assert sorted(p.name for p in (store.root / "parts").iterdir()) == sorted(
        [man.parts[0][k].split("/")[1] for k in ("segments", "tokens", "cues")])
    assert verify_index(store.root).ok


def test_damaged_cue_file_is_reported(tmp_path):
    store = Store.create(tmp_path / "ix", {"name": "e"}, DIM)
    with store.writing():
        man, _ = _ingest(store, "a.mp4", 0, ["hello there"])
    path = store.root / man.parts[0]["cues"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_index(store.root)
    assert not report.ok and report.bad[0].videos == ["a.mp4"]
    with pytest.raises(IndexFormatError, match="cues.arrow"):
        store.snapshot().cues()


def test_rollback_drops_cues_and_bad_vectors_are_refused(tmp_path):
    store = Store.create(tmp_path / "ix", {"name": "e"}, DIM)
    with store.writing():
        w = store.new_part()
        w.add(0, _rec("a.mp4", 0.0))
        mark = w.mark()
        w.add(1, _rec("b.mp4", 0.0))
        w.add_cues(1, "b.mp4", [0.0], [1.0], ["x"], [None], [torch.ones(1, CUE_DIM)])
        with pytest.raises(ValueError, match="shape"):
            w.add_cues(1, "b.mp4", [0.0], [1.0], ["x"], [None], [torch.ones(1, CUE_DIM + 1)])
        with pytest.raises(ValueError, match="not in this part"):
            w.add_cues(7, "b.mp4", [0.0], [1.0], ["x"], [None], [torch.ones(1, CUE_DIM)])
        w.rollback(mark)
        man = store.commit(store.manifest(), [w.close()], next_segment_id=2)
    assert "cues" not in man.parts[0] and store.snapshot().cues() is None


def test_format_2_index_still_opens(tmp_path):
    store = Store.create(tmp_path / "ix", {"name": "e"}, DIM)
    with store.writing():
        w = store.new_part()
        w.add(0, _rec("a.mp4", 0.0))
        store.commit(store.manifest(), [w.close()], next_segment_id=1)
    for f in [store.root / "manifest.json", *(store.root / "manifests").iterdir()]:
        data = json.loads(f.read_text())
        data["format_version"] = 2
        data.pop("transcript", None)
        f.write_text(json.dumps(data))
    snap = store.snapshot()
    assert len(snap) == 1 and snap.cues() is None and snap.manifest.transcript is None
