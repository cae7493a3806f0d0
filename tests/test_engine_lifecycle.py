"""Index lifecycle through the engine, with real (tiny) videos and the colour encoder: streamed ingest,
failed videos, delete by filter, versions, incremental == rebuild, readers during writes, killed writers."""

import multiprocessing as mp
import random
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maxsim.index.files as files_mod
import maxsim.index.parts as parts_mod
from maxsim import Engine
from maxsim.errors import VersionNotFoundError
from maxsim.index import Manifest, Store
from maxsim.media.video import content_hash
from maxsim.testing.synthetic import write_video
from tests import crash_worker
from tests.color_encoder import ColorEncoder

SCENES = {
    "a": [[(2.0, "red"), (2.0, "blue")], [(2.0, "green"), (4.0, "red")]],
    "b": [[(2.0, "yellow"), (2.0, "red"), (2.0, "cyan")], [(4.0, "white")]],
    "c": [[(4.0, "magenta")], [(2.0, "blue"), (2.0, "orange")]],
    "d": [[(2.0, "purple"), (4.0, "green")], [(2.0, "black"), (2.0, "red")]],
}
QUERIES = ["red", "blue green", "yellow white magenta", "orange purple black cyan"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """{(name, variant): path} of small videos; variant 1 of a name is "the same file, changed"."""
    d = tmp_path_factory.mktemp("pool")
    return {
        (name, v): write_video(d / f"{name}{v}.mp4", scenes, seed=ord(name) * 10 + v)
        for name, variants in SCENES.items()
        for v, scenes in enumerate(variants)
    }


def place(lib, pool, name, variant):
    """Put variant ``variant`` of video ``name`` at lib/<name>.mp4 (as a user replacing a file would)."""
    dst = lib / f"{name}.mp4"
    shutil.copyfile(pool[(name, variant)], dst)
    return dst


def new_engine(path, **kw):
    return Engine(path, encoder=ColorEncoder(), segmenter="fixed:2", **kw)


def scores(eng):
    """{(video, start): score} for every live segment and each query, plus the ranked lists."""
    qs = ColorEncoder().encode_texts(QUERIES)
    k = max(1, len(eng))
    out, ranked = {}, []
    for qi, hits in enumerate(eng.search_vectors(qs, k=k)):
        ranked.append([h.score for h in hits])
        for h in hits:
            out[(qi, h.video, h.start)] = h.score
    return out, ranked


def assert_same_scores(eng, fresh):
    got, got_rank = scores(eng)
    want, want_rank = scores(fresh)
    assert got.keys() == want.keys()
    for key, s in want.items():
        assert got[key] == pytest.approx(s, abs=1e-4), key
    for g, w in zip(got_rank, want_rank, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4)


# -- streaming and failures ------------------------------------------------------------------------------
class RecordingEncoder(ColorEncoder):
    """Notes the bytes of part files on disk at each encoder call; fails a chosen video after some clips."""

    def __init__(self, index, fail_video=None, fail_after=0):
        self.index, self.fail_video, self.fail_after = index, fail_video, fail_after
        self.sizes, self.calls = [], {}

    def encode_clips(self, clips):
        parts = self.index / "parts"
        self.sizes.append(sum(f.stat().st_size for f in parts.iterdir()) if parts.exists() else 0)
        v = clips[0].video
        self.calls[v] = self.calls.get(v, 0) + 1
        out = super().encode_clips(clips)
        if v.endswith(self.fail_video or "-") and self.calls[v] > self.fail_after:
            out[0][0, 0] = float("inf")
        return out


def test_ingest_streams_segments_to_disk(tmp_path, pool, monkeypatch):
    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 1000)
    long = write_video(tmp_path / "long.mp4", [(3.0, c) for c in ("red", "blue", "green", "cyan")] * 3)
    enc = RecordingEncoder(tmp_path / "idx")
    eng = Engine(tmp_path / "idx", encoder=enc, segmenter="fixed:1", batch_size=2)
    assert eng.ingest([long], progress=False).ok
    # record batches reached the disk while the video was still being encoded: nothing piles up in memory
    assert len(enc.sizes) == 18 and len(set(enc.sizes)) > 5 and enc.sizes == sorted(enc.sizes)
    assert len(eng) == 36


def test_a_video_failing_midway_leaves_nothing_visible(tmp_path, pool, monkeypatch):
    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 600)  # its first rows are flushed before it fails
    lib = tmp_path / "lib"
    lib.mkdir()
    a, b, c = (place(lib, pool, n, 0) for n in "abc")
    enc = RecordingEncoder(tmp_path / "idx", fail_video="b.mp4", fail_after=4)
    eng = Engine(tmp_path / "idx", encoder=enc, segmenter="fixed:1", batch_size=1)
    rep = eng.ingest([a, b, c], progress=False)
    assert [p for p, _ in rep.failed] == [str(b)] and "NaN or inf" in rep.failed[0][1]
    assert eng.videos() == sorted(str(p.resolve()) for p in (a, c))
    assert all(not h.video.endswith("b.mp4") for h in eng.search("yellow red cyan", k=100))
    man = eng.manifest
    assert man.n_deleted == 4  # b's 4 flushed rows are stored but tombstoned
    assert len(eng) == man.videos[str(a.resolve())]["segments"] + man.videos[str(c.resolve())]["segments"]
    rep = eng.compact()
    assert rep.segments_dropped == man.n_deleted and eng.manifest.deleted == []
    assert eng.videos() == sorted(str(p.resolve()) for p in (a, c))


def test_delete_where_prefix_match_and_videos(tmp_path, pool):
    lib = tmp_path / "lib"
    for sub in ("cam1", "cam10", "cam2"):
        (lib / sub).mkdir(parents=True)
    files = [place(lib / "cam1", pool, "a", 0), place(lib / "cam10", pool, "b", 0),
             place(lib / "cam2", pool, "c", 0), place(lib / "cam2", pool, "d", 0)]
    eng = new_engine(tmp_path / "idx")
    eng.ingest([lib], progress=False)
    assert len(eng.videos()) == 4
    gone = eng.delete_where(prefix=lib / "cam1")  # not cam10: whole path components
    assert list(gone) == [str(files[0].resolve())] and gone[str(files[0].resolve())] == 2
    assert eng.delete_where(prefix=lib / "nothing-here") == {} and eng.version == 2
    gone = eng.delete_where(match=lambda p: p.endswith("d.mp4"), videos=[files[1]])
    assert sorted(gone) == sorted(str(f.resolve()) for f in files[1::2])
    assert eng.videos() == [str(files[2].resolve())]
    assert [h["op"] for h in eng.history] == ["create", "ingest", "delete", "delete"]
    with pytest.raises(ValueError, match="needs prefix"):
        eng.delete_where()


def test_versions_pin_and_refresh(tmp_path, pool):
    lib = tmp_path / "lib"
    lib.mkdir()
    writer = new_engine(tmp_path / "idx")
    writer.ingest([place(lib, pool, "a", 0)], progress=False)
    reader = Engine(tmp_path / "idx")  # no encoder given: loaded from the index only for text queries
    writer.ingest([place(lib, pool, "b", 0)], progress=False)
    assert len(reader) == 2 and reader.version == 1  # an open engine searches the version it opened
    assert len(reader.search_vectors(ColorEncoder().encode_texts(["red"]), k=50)[0]) == 2
    ptr = reader.snapshot.chunks[0].tokens.data_ptr()
    assert reader.refresh() == 2 and len(reader) == 5
    assert reader.snapshot.chunks[0].tokens.data_ptr() == ptr  # the unchanged part was not mapped again
    old = Engine(tmp_path / "idx", version=1)
    assert len(old) == 2 and old.versions() == [0, 1, 2]
    with pytest.raises(PermissionError, match="read-only at version 1"):
        old.delete(lib / "a.mp4")
    with pytest.raises(PermissionError, match="does not refresh"):
        old.refresh()
    writer.compact(keep_versions=1)
    assert len(old) == 2 and len(old.search_vectors(ColorEncoder().encode_texts(["red"]), k=50)[0]) == 2
    with pytest.raises(VersionNotFoundError, match="no longer kept"):
        Engine(tmp_path / "idx", version=1)


# -- incremental == rebuild -----------------------------------------------------------------------------
NAMES = list(SCENES)[:3]
ENGINE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.sampled_from(NAMES), st.integers(0, 1)),
        st.tuples(st.just("delete"), st.sampled_from(NAMES), st.just(0)),
        st.tuples(st.just("compact"), st.just(""), st.booleans()),
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ENGINE_OPS)
def test_incremental_equals_rebuild(tmp_path_factory, pool, ops):
    work = tmp_path_factory.mktemp("inc")
    lib = work / "lib"
    lib.mkdir()
    eng = new_engine(work / "idx")
    live: dict[str, int] = {}
    for op, name, arg in ops:
        if op == "ingest":
            path = place(lib, pool, name, arg)
            rep = eng.ingest([path], progress=False)
            assert rep.ok and (rep.skipped != []) == (live.get(name) == arg)
            live[name] = arg
        elif op == "delete" and name in live:
            eng.delete(lib / f"{name}.mp4")
            del live[name]
        elif op == "compact":
            eng.compact(full=arg, keep_versions=2)
    fresh = new_engine(work / "fresh")
    if live:
        fresh.ingest([lib / f"{n}.mp4" for n in live], progress=False)
    assert eng.videos() == fresh.videos() and len(eng) == len(fresh)
    assert_same_scores(eng, fresh)
    assert_same_scores(Engine(work / "idx"), fresh)  # and after reopening


# -- readers during writes ------------------------------------------------------------------------------
def test_readers_see_only_whole_versions_while_a_writer_ingests_and_compacts(tmp_path, pool, monkeypatch):
    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 800)
    lib = tmp_path / "lib"
    lib.mkdir()
    writer = new_engine(tmp_path / "idx")
    states: dict[int, set] = {0: set()}  # version -> {(video, start)} committed
    seen: list[tuple[int, set]] = []
    errors: list[BaseException] = []
    done = threading.Event()
    q = ColorEncoder().encode_texts(["red blue green yellow"])

    def read() -> None:
        eng = Engine(tmp_path / "idx", encoder=ColorEncoder())
        try:
            while not done.is_set():
                eng.refresh()
                hits = eng.search_vectors(q, k=1000)[0]
                keys = {(h.video, h.start) for h in hits}
                assert len(keys) == len(hits) == len(eng)
                seen.append((eng.version, keys))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def record() -> None:
        snap = writer.snapshot
        vids = snap.table.column("video").to_pylist()
        states[writer.version] = {(vids[r], float(snap.starts[r])) for r in np.flatnonzero(snap.live)}

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for name in "abcd":
            writer.ingest([place(lib, pool, name, 0)], progress=False)
            record()
        writer.delete(lib / "b.mp4")
        record()
        writer.compact(keep_versions=1)
        record()
        writer.ingest([place(lib, pool, "a", 1), place(lib, pool, "b", 1)], progress=False)
        record()
        writer.compact(full=True, keep_versions=1)
        record()
        time.sleep(0.2)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert not errors, errors
    versions = {v for v, _ in seen}
    assert len(versions) >= 2
    for v, keys in seen:
        assert keys == states[v], f"version {v}: a reader saw a state that was never committed"


# -- SIGKILL at any point -------------------------------------------------------------------------------
BATCH_BYTES = 700

# (operation, video names, failpoint, finish the operation afterwards): 15 deterministic kill points across
# ingest, replace, delete and compaction; "commit.done" and "gc.unlink" come after the commit point.
SCENARIOS = [
    ("ingest", "ab", "part.add:1", False),
    ("ingest", "ab", "part.add:4", False),
    ("ingest", "ab", "part.flush:1", False),
    ("ingest", "ab", "part.close", False),
    ("ingest", "ab", "commit.start", False),
    ("ingest", "ab", "commit.version_file.tmp", False),
    ("ingest", "ab", "commit.version_file", False),
    ("ingest", "ab", "commit.manifest.tmp", True),
    ("ingest", "c", "commit.done", True),
    ("replace", "a", "part.flush:2", False),
    ("replace", "a", "commit.manifest.tmp", True),
    ("delete", "b", "commit.version_file", True),
    ("compact", "", "compact.batch:2", False),
    ("compact", "", "part.close", False),
    ("compact", "", "gc.unlink:1", True),
]
AFTER_COMMIT = {"commit.done", "gc.unlink:1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pool):
    """Tokens of every segment of every variant, from a clean index: {content hash: {start: tokens}}."""
    eng = new_engine(tmp_path_factory.mktemp("ref") / "idx")
    eng.ingest(list(pool.values()), progress=False)
    snap = eng.snapshot
    hashes = snap.table.column("video_hash").to_pylist()
    out: dict[str, dict[float, torch.Tensor]] = {}
    for row in range(snap.table.num_rows):
        out.setdefault(hashes[row], {})[float(snap.starts[row])] = snap.segment_tokens(row).clone()
    return out


def check_index(path, reference, allowed_states):
    """The index opens, holds one of the allowed {video: hash} states, every video whole, search works."""
    eng = Engine(path, encoder=ColorEncoder())
    state = {v: e["hash"] for v, e in eng.manifest.videos.items()}
    assert state in allowed_states, f"state {state} is none of {allowed_states}"
    snap = eng.snapshot
    vids = snap.table.column("video").to_pylist()
    hashes = snap.table.column("video_hash").to_pylist()
    rows: dict[str, dict[float, torch.Tensor]] = {}
    for row in np.flatnonzero(snap.live):
        assert state.get(vids[row]) == hashes[row], "a live row of a video not (or differently) committed"
        rows.setdefault(vids[row], {})[float(snap.starts[row])] = snap.segment_tokens(row)
    assert rows.keys() == state.keys()
    for video, by_start in rows.items():
        want = reference[state[video]]
        assert by_start.keys() == want.keys(), f"{video}: partial video"
        for start, tokens in want.items():
            assert torch.equal(by_start[start], tokens)
    hits = eng.search("red blue", k=100)
    assert len(hits) == len(eng) == sum(len(r) for r in rows.values())
    return state


def referenced_files(root):
    refs = set()
    for f in (root / "manifests").glob("v*.json"):
        man = Manifest.from_json(f.read_text(), f)
        refs |= {(root / p[k]).name for p in man.parts for k in ("segments", "tokens")}
    return refs


def test_sigkill_at_20_points_leaves_the_last_committed_version(tmp_path, pool, reference):
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.crash_worker"])
    lib = tmp_path / "lib"
    lib.mkdir()
    index = tmp_path / "idx"
    rng = random.Random(6)
    new_engine(index)  # created (version 0)
    variant = {name: 0 for name in "abcd"}
    for name in "abcd":
        place(lib, pool, name, 0)

    def path(name):
        return str((lib / f"{name}.mp4").resolve())

    def run(op, names, crash_at, kill_after=None):
        """Run op in a writer process that dies at crash_at (or is killed after kill_after s)."""
        p = ctx.Process(target=crash_worker.run, args=(str(index), "ingest" if op == "replace" else op,
                                                       [path(n) for n in names], crash_at, BATCH_BYTES))
        p.start()
        if kill_after is not None:
            time.sleep(kill_after)
            p.kill()
        p.join(60)
        return p.exitcode

    state: dict[str, str] = {}  # the committed {video path: content hash}
    kills = list(SCENARIOS)
    kills += [(op, names, rng.uniform(0.05, 0.6), True) for op, names in
              [("ingest", "d"), ("replace", "b"), ("compact", ""), ("replace", "d"), ("delete", "a")]]
    outcomes = []
    for op, names, crash_at, finish in kills:
        kill_after = crash_at if isinstance(crash_at, float) else None
        crash_at = None if kill_after is not None else crash_at
        if op == "replace":  # change the file unless it already differs from what is committed
            for n in names:
                if content_hash(path(n)) == state.get(path(n)):
                    variant[n] = 1 - variant[n]
                    place(lib, pool, n, variant[n])
        before, after = dict(state), dict(state)
        for n in names:
            if op == "delete":
                after.pop(path(n), None)
            elif op in ("ingest", "replace"):
                after[path(n)] = content_hash(path(n))
        code = run(op, names, crash_at, kill_after)
        if crash_at is not None:
            assert code == -9, f"{op} did not reach failpoint {crash_at} (exit code {code})"
            allowed = [after] if crash_at in AFTER_COMMIT else [before]
        else:
            allowed = [before, after]
        state = check_index(index, reference, allowed)
        outcomes.append((op, crash_at or f"t+{kill_after:.2f}s", "committed" if state == after else "kept"))
        # the next writer removes what the dead one left behind
        with Store(index).writing():
            pass
        parts = {f.name for f in (index / "parts").iterdir()} if (index / "parts").exists() else set()
        assert parts <= referenced_files(index), "files of a dead writer were left behind"
        assert not list(index.rglob("*.tmp"))
        if finish and state != after:  # and the operation then completes normally
            assert run(op, names, None) == 0
            state = check_index(index, reference, [after])
    assert len(outcomes) == 20
    assert {o for _, _, o in outcomes} == {"committed", "kept"}


def test_disk_full_during_ingest_is_a_clear_error_and_changes_nothing(tmp_path, pool, monkeypatch):
    import errno

    from maxsim.errors import IndexWriteError

    lib = tmp_path / "lib"
    lib.mkdir()
    eng = new_engine(tmp_path / "idx")
    eng.ingest([place(lib, pool, "a", 0)], progress=False)
    parts_before = sorted((tmp_path / "idx" / "parts").iterdir())
    real = files_mod.open_sink

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 500)
    monkeypatch.setattr(files_mod, "open_sink", lambda p: Full(real(p)))
    msg = r"no space left on device\); the index is unchanged at version 1"
    with pytest.raises(IndexWriteError, match=msg):
        eng.ingest([place(lib, pool, "b", 0), place(lib, pool, "c", 0)], progress=False)
    monkeypatch.setattr(files_mod, "open_sink", real)
    assert eng.version == 1 and Engine(tmp_path / "idx").version == 1
    assert sorted((tmp_path / "idx" / "parts").iterdir()) == parts_before  # the failed part was removed
    assert eng.ingest([lib / "b.mp4"], progress=False).version == 2


def test_commit_every_keeps_what_was_committed_when_killed(tmp_path, pool):
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [str(place(lib, pool, n, 0).resolve()) for n in "abc"]  # 2, 3 and 2 segments
    eng = new_engine(tmp_path / "idx")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.crash_worker"])
    # killed while adding the first segment of the third video: the first two were committed
    p = ctx.Process(target=crash_worker.run, args=(str(tmp_path / "idx"), "ingest_each", files, "part.add:6",
                                                   BATCH_BYTES))
    p.start()
    p.join(60)
    assert p.exitcode == -9
    assert eng.refresh() == 2 and eng.videos() == files[:2] and len(eng) == 5
    rep = eng.ingest(files, progress=False, commit_every=1)
    assert rep.version == 3 and len(rep.skipped) == 2 and eng.videos() == files
    rep = eng.ingest([place(lib, pool, n, 1) for n in "ab"] + [place(lib, pool, "d", 0)], progress=False,
                     commit_every=2)
    assert rep.version == 5 and [h["videos"] for h in eng.history[-2:]] == [2, 1]
    assert [h.get("videos_replaced") for h in eng.history[-2:]] == [2, 0]
    with pytest.raises(ValueError, match="commit_every"):
        eng.ingest(files, commit_every=0)


def test_a_second_writer_fails_at_once_or_waits(tmp_path, pool):
    from maxsim.errors import LockedError

    lib = tmp_path / "lib"
    lib.mkdir()
    eng = new_engine(tmp_path / "idx")
    patient = new_engine(tmp_path / "idx", lock_timeout=10)
    hold, release = threading.Event(), threading.Event()

    def writer():
        with Store(tmp_path / "idx").writing():
            hold.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    hold.wait()
    with pytest.raises(LockedError, match="another process is writing"):
        eng.ingest([place(lib, pool, "a", 0)], progress=False)
    timer = threading.Timer(0.5, release.set)
    t0 = time.monotonic()
    timer.start()
    assert patient.ingest([lib / "a.mp4"], progress=False).version == 1  # waited for the lock
    assert time.monotonic() - t0 >= 0.5
    t.join()


def test_ingest_streams_from_decoding_to_disk(tmp_path, monkeypatch):
    """Clips reach the encoder, and vectors the part file, while the video is still being decoded."""
    import maxsim.media.clips as clips_mod

    monkeypatch.setattr(parts_mod, "BATCH_BYTES", 1000)
    video = write_video(tmp_path / "long.mp4", [(5.0, c) for c in ("red", "blue", "green", "cyan")] * 3)
    real, decoded = clips_mod.iter_decoded, [0]

    class Counting:
        def __init__(self, it):
            self.it = it

        def __iter__(self):
            for item in self.it:
                decoded[0] += 1
                yield item

        def __getattr__(self, name):  # duration, close, ...
            return getattr(self.it, name)

        def __enter__(self):
            if hasattr(self.it, "__enter__"):
                self.it.__enter__()
            return self

        def __exit__(self, *exc):
            return self.it.__exit__(*exc) if hasattr(self.it, "__exit__") else None

    monkeypatch.setattr(clips_mod, "iter_decoded", lambda *a, **k: Counting(real(*a, **k)))

    class Probe(RecordingEncoder):
        def encode_clips(self, clips):
            self.decoded = getattr(self, "decoded", []) + [decoded[0]]
            return super().encode_clips(clips)

    enc = Probe(tmp_path / "idx")
    eng = Engine(tmp_path / "idx", encoder=enc, segmenter="fixed:2", batch_size=2)
    # decoded in this process, where the frames can be counted (a decode worker streams the same way)
    assert eng.ingest([video], progress=False, isolate=False).ok and len(eng) == 30
    total = decoded[0]
    assert total == 600 and enc.decoded[0] < total / 4  # encoding started a few seconds into the video
    on_disk_early = [size for size, n in zip(enc.sizes, enc.decoded, strict=True) if n < total / 2]
    assert max(on_disk_early) > min(on_disk_early)  # and vectors were written while decoding went on
