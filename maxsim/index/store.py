"""The index folder as a whole: create it, read versions, take the writer lock, commit, collect garbage.

An index folder holds

- ``manifest.json``: the committed state of the latest version (see :mod:`maxsim.index.manifest`). A commit
  writes every new file first, then replaces this file with ``os.replace``: readers see the old or the new
  version, never a half-written one. Replacing it is the commit point.
- ``manifests/v<version>.json``: an immutable copy of each retained version, so that a past version can be
  opened read-only (``Store.snapshot(version=N)``). The last :data:`KEEP_VERSIONS` are kept by default.
- ``parts/<part>.segments.arrow`` and ``parts/<part>.tokens.arrow``: the segments and their token vectors
  (see :mod:`maxsim.index.parts` and :mod:`maxsim.index.format`).
- ``LOCK``: held (``flock``) by the one writer; the OS releases it when the writer dies. Readers never take
  it, so they never block (nor are blocked by) a writer.
- sidecar folders of other stages (``prune/``), each with its own commit point; the store's garbage
  collection asks each :class:`Sidecar` it was given to collect its own leftovers.

Garbage collection (on every writer open, and after a compaction): files of a dead writer (temporary
manifests, parts no retained version references, version files newer than the committed one) are
removed; part files that no retained version references are removed; version files older than the
retained window are removed. Files that are not ours (other names) are left alone, with a warning when
they sit in ``parts/`` or ``manifests/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from maxsim.errors import IndexFormatError, IndexWriteError, LockedError
from maxsim.index.compact import CompactReport, compact
from maxsim.index.files import (
    clear_write_errors,
    failpoint,
    fsync_dir,
    retained_versions,
    version_files,
    version_path,
    write_atomic,
)
from maxsim.index.format import (
    CREATE_WAIT_S,
    FILE_FACTS,
    FORMAT_VERSION,
    KEEP_VERSIONS,
    LOCK,
    MANIFEST,
    MANIFESTS,
    PART_FILE,
    PARTS,
    TARGET_PART_BYTES,
    TMP_FILE,
    VERSION_FILE,
    in_ranges,
    merge_ranges,
    part_file_keys,
    ranges_from_ids,
    storage_dtype,
)
from maxsim.index.manifest import Manifest, damage_without_manifest, read_manifest
from maxsim.index.parts import PartWriter
from maxsim.index.snapshot import Snapshot

logger = logging.getLogger("maxsim.index")


class Sidecar(Protocol):
    """A folder of another stage inside the index (e.g. the prune index): it commits on its own, and the
    store's garbage collection asks it to remove its own leftovers."""

    def collect_garbage(self, root: Path, latest: Manifest) -> list[str]:
        """Remove files of this sidecar that nothing references any more (``latest``: the index's
        committed manifest); returns their paths relative to ``root``."""
        ...


class Store:
    """An index folder: open or create it, read snapshots, commit new parts and deletions, compact."""

    def __init__(self, root: str | Path, sidecars: Sequence[Sidecar] = ()) -> None:
        self.root = Path(root)
        self.sidecars = tuple(sidecars)
        self._writing = False

    @classmethod
    def create(cls, root: str | Path, encoder: dict[str, Any], dim: int, dtype: str = "float16",
               sampler: dict[str, Any] | None = None, wait: float = 0.0) -> Store:
        """Create an empty index (version 0) at ``root``; the folder may exist but must hold no index
        (:class:`FileExistsError` when one was created meanwhile, :class:`IndexFormatError` when it holds
        a damaged one). ``encoder`` and ``sampler`` (the frame-sampling recipe) are recorded as given.
        ``wait``: seconds to wait for another writer, at least :data:`CREATE_WAIT_S` (a concurrent
        creator holds the lock for milliseconds)."""
        dtype = storage_dtype(dtype)
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        with store.writing(wait=max(float(wait), CREATE_WAIT_S)):
            if (store.root / MANIFEST).exists():
                raise FileExistsError(f"an index already exists at {store.root}")
            damage = damage_without_manifest(store.root)
            if damage is not None:
                raise IndexFormatError(damage)
            man = Manifest(encoder=encoder, dim=int(dim), dtype=dtype, sampler=sampler)
            man.history.append({"version": 0, "time": time.time(), "op": "create"})
            with clear_write_errors(store.root, None):
                (store.root / MANIFESTS).mkdir(exist_ok=True)
                write_atomic(version_path(store.root, 0), man.to_json().encode(), "commit.version_file")
                write_atomic(store.root / MANIFEST, man.to_json().encode(), "commit.manifest")
        return store

    def manifest(self, version: int | None = None) -> Manifest:
        """The manifest of the latest committed version, or of a retained ``version``."""
        return read_manifest(self.root, version)

    def catalog(self, manifest: Manifest) -> dict[str, dict[str, Any]]:
        """video path -> catalog entry (hash, settings, id ranges, counts) of a version; for an index written
        before the catalog existed, built from that version's segment tables."""
        if manifest.videos is not None:
            return manifest.videos
        return Snapshot(self.root, manifest).catalog

    def versions(self) -> list[int]:
        """The versions that can still be opened (the latest included), oldest first."""
        return retained_versions(self.root, self.manifest().version)

    def snapshot(self, version: int | None = None, previous: Snapshot | None = None) -> Snapshot:
        """A consistent read-only view of the latest committed version (or of a retained one).

        With ``previous`` (an older snapshot of this index), the parts both share are not mapped again.
        """
        for attempt in range(5):
            man = self.manifest(version)
            if previous is not None and previous.version == man.version:
                return previous
            try:
                return Snapshot(self.root, man, previous)
            except IndexFormatError:
                # A writer may have committed and collected this version's files between our reading
                # the manifest and opening them: retry on the newer version. Otherwise it is damage.
                if version is not None or attempt == 4 or self.manifest().version == man.version:
                    raise
        raise AssertionError("unreachable")

    # -- the writer lock -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, gc: bool = True, wait: float = 0.0) -> Iterator[None]:
        """Hold the writer lock; a second writer gets :class:`LockedError` (at once, or after ``wait`` s).

        The lock is an ``flock`` on ``LOCK``: the OS releases it when the holder exits or is killed, so a
        dead writer never holds it. On taking it, the leftovers of a dead writer are removed (and, with
        ``gc``, the files of versions beyond the retained window).
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise IndexWriteError(
                e.errno, f"{self.root}: cannot write to this index ({e.strerror or e}); it can still be read"
            ) from e
        try:
            deadline = time.monotonic() + max(0.0, float(wait))
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as e:
                    if time.monotonic() < deadline:
                        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                        continue
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                    waited = f" (waited {wait:g} s)" if wait else ""
                    raise LockedError(
                        f"{self.root}: another process is writing to this index ({holder}){waited}; wait for "
                        "it to finish (readers are not affected)"
                    ) from e
            with contextlib.suppress(OSError):
                since = time.strftime("%Y-%m-%d %H:%M:%S")
                info = f"held by pid {os.getpid()} on {socket.gethostname()} since {since}"
                os.ftruncate(fd, 0)
                os.pwrite(fd, info.encode(), 0)
            self._writing = True
            if (self.root / MANIFEST).exists():
                try:
                    self.collect_garbage(keep_versions=KEEP_VERSIONS if gc else None)
                except IndexFormatError:
                    pass  # a damaged manifest: nothing is collected (`maxsim repair` restores it first)
            yield
        finally:
            self._writing = False
            os.close(fd)  # closing releases the lock

    def _require_lock(self, what: str) -> None:
        if not self._writing:
            raise RuntimeError(f"Store.{what} needs the writer lock: call it inside `with store.writing():`")

    def new_part(self, base: Manifest | None = None) -> PartWriter:
        """A writer for a new part (its files are invisible until committed)."""
        man = base or self.manifest()
        with clear_write_errors(self.root, man.version):
            return PartWriter(self.root, man.dim, man.dtype, man.version,
                              cue_dim=(man.transcript or {}).get("dim"))

    # -- commits ---------------------------------------------------------------------------------------
    def commit(
        self,
        base: Manifest,
        new_parts: Sequence[dict[str, Any]] = (),
        deleted: Iterable[int] = (),
        next_segment_id: int | None = None,
        op: str = "ingest",
        info: dict[str, Any] | None = None,
        delete_videos: Iterable[str] = (),
        removed_parts: Iterable[str] = (),
        deleted_ranges: Iterable[Sequence[int]] | None = None,
        keep_versions: int = KEEP_VERSIONS,
        transcript: dict[str, Any] | None = None,
    ) -> Manifest:
        """Atomically publish ``base`` changed as asked as the next version.

        In order: the videos in ``delete_videos`` lose their segments (tombstoned), the segment ids in
        ``deleted`` are tombstoned (single segments: the catalog entries of the videos they belong to are
        fixed up, which costs O(videos in the index); the engine deletes whole videos and never uses it,
        tests and tools that delete chosen segments do), the parts ``removed_parts`` (ids) leave the
        index, ``new_parts`` join it (their videos are added to the catalog; their dead rows tombstoned).
        With ``deleted_ranges`` the tombstones are replaced by these (compaction, repair: the caller has
        merged all that must stay hidden, the ranges of ``delete_videos`` included).

        ``transcript`` records the transcript channel's recipe (see :class:`Manifest`) when the index has
        none yet; one that differs from the recorded recipe's dim is refused.

        Afterwards the copies of versions older than the last ``keep_versions`` are removed, so that the
        retained versions are as many as promised; the parts only they used go at the next garbage
        collection (when a writer takes the lock), which reads the older manifests.
        """
        current = self.manifest()
        if current.version != base.version:
            raise IndexFormatError(
                f"{self.root}: the index moved from version {base.version} to {current.version} "
                "during this write"
            )
        if current.videos is None:  # an index from before the catalog: built once, from its tables
            current = Snapshot(self.root, current).manifest
        man = current.copy()
        catalog = man.videos
        tomb = [list(r) for r in man.deleted] if deleted_ranges is None else [list(r) for r in deleted_ranges]
        n_deleted_videos = 0
        for v in delete_videos:
            entry = catalog.pop(v, None)
            if entry is None:
                raise KeyError(f"video {v!r} is not in the index at {self.root}")
            if deleted_ranges is None:
                tomb = merge_ranges(tomb, entry["ranges"])
            n_deleted_videos += 1
        deleted = list(deleted)
        if deleted:
            dead = ranges_from_ids(deleted)
            tomb = merge_ranges(tomb, dead)
            dead_ids = np.asarray(deleted, dtype=np.int64)
            for v in list(catalog):  # keep the catalog exact when single segments are deleted
                entry = catalog[v]
                hit = [r for r in entry["ranges"] if in_ranges(dead_ids, [r]).any()]
                if not hit:
                    continue
                ids = np.concatenate([np.arange(lo, hi) for lo, hi in entry["ranges"]])
                keep = ids[~np.isin(ids, dead_ids)]
                if keep.size == 0:
                    del catalog[v]
                else:
                    entry["ranges"] = ranges_from_ids(keep)
                    entry["segments"] = int(keep.size)
        removed = set(removed_parts)
        if removed:
            missing = removed - {p["id"] for p in man.parts}
            if missing:
                raise KeyError(f"parts {sorted(missing)} are not in version {man.version} of {self.root}")
            man.parts = [p for p in man.parts if p["id"] not in removed]
        segments_added = 0
        for part in new_parts:
            part = dict(part)
            videos = part.pop("videos", {}) or {}
            tomb = merge_ranges(tomb, part.pop("dead", []) or [])
            for v, entry in videos.items():
                old = catalog.get(v)
                if old is None:
                    catalog[v] = entry
                else:
                    old["ranges"] = merge_ranges(old["ranges"], entry["ranges"])
                    old["segments"] += entry["segments"]
                    old["tokens"] += entry["tokens"]
                    old["hash"], old["settings"] = entry["hash"], entry["settings"]
                    for key in FILE_FACTS:  # the newest segments' file facts, or none
                        if key in entry:
                            old[key] = entry[key]
                        else:
                            old.pop(key, None)
                segments_added += entry["segments"]
            man.parts.append(part)
        man.deleted = tomb
        if transcript is not None:
            if man.transcript is not None and man.transcript.get("dim") != transcript.get("dim"):
                raise ValueError(f"{self.root}: transcript vectors of dim {transcript.get('dim')}, but the "
                                 f"index records dim {man.transcript.get('dim')}")
            if man.transcript is None:
                man.transcript = dict(transcript)
        man.format_version = FORMAT_VERSION  # an index of an older format is upgraded by its first commit
        man.version += 1
        if next_segment_id is not None:
            man.next_segment_id = max(man.next_segment_id, int(next_segment_id))
        entry = {"version": man.version, "time": time.time(), "op": op}
        if segments_added:
            entry["segments_added"] = segments_added
        if n_deleted_videos:
            entry["videos_deleted"] = n_deleted_videos
        entry.update(info or {})
        man.history.append(entry)
        data = man.to_json().encode()
        with clear_write_errors(self.root, current.version):
            failpoint("commit.start")
            (self.root / MANIFESTS).mkdir(exist_ok=True)
            write_atomic(version_path(self.root, man.version), data, "commit.version_file")
            failpoint("commit.version_file")
            write_atomic(self.root / MANIFEST, data, "commit.manifest")
        failpoint("commit.done")
        self._trim_versions(man.version, keep_versions)
        return man

    def _trim_versions(self, latest: int, keep_versions: int) -> None:
        """Remove the copies of versions older than the last ``keep_versions`` (after a commit)."""
        cutoff = latest - max(1, int(keep_versions)) + 1
        removed = False
        for v in version_files(self.root):
            if v < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    version_path(self.root, v).unlink()
                    removed = True
                    failpoint("gc.unlink")
        if removed:
            with contextlib.suppress(OSError):
                fsync_dir(self.root / MANIFESTS)

    # -- garbage collection ----------------------------------------------------------------------------
    def collect_garbage(self, keep_versions: int | None = KEEP_VERSIONS) -> list[str]:
        """Remove files no retained version needs; returns their paths (relative to the index).

        Always: temporary files of dead writers, version files newer than the committed version, and part
        files no retained version references. With ``keep_versions``: version files older than the last
        ``keep_versions`` versions (and then the parts only they referenced). Needs the writer lock.
        Open readers are safe: their files are memory-mapped, and unlinking a mapped file keeps its data
        until the mapping goes away (POSIX).
        """
        self._require_lock("collect_garbage")
        latest = self.manifest()
        removed: list[str] = []

        def unlink(path: Path) -> None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(str(path.relative_to(self.root)))
                failpoint("gc.unlink")

        for name in os.listdir(self.root):
            if TMP_FILE.match(name):
                unlink(self.root / name)
        mdir = self.root / MANIFESTS
        versions: dict[int, Path] = {}
        foreign: list[str] = []
        if mdir.is_dir():
            for name in os.listdir(mdir):
                m = VERSION_FILE.match(name)
                if m:
                    versions[int(m.group(1))] = mdir / name
                elif TMP_FILE.match(name):
                    unlink(mdir / name)
                else:
                    foreign.append(f"{MANIFESTS}/{name}")
        for v in [v for v in versions if v > latest.version]:  # written by a writer that died before commit
            unlink(versions.pop(v))
        retained = sorted(versions)
        if keep_versions is not None:
            keep_versions = max(1, int(keep_versions))
            cutoff = latest.version - keep_versions + 1
            for v in [v for v in retained if v < cutoff]:
                unlink(versions.pop(v))
            retained = sorted(versions)
        referenced: set[str] = set()
        for p in latest.parts:
            referenced.update(p[key] for key in part_file_keys(p))
        pdir = self.root / PARTS
        candidates: list[str] = []  # part files the latest version does not use
        if pdir.is_dir():
            for name in sorted(os.listdir(pdir)):
                rel = f"{PARTS}/{name}"
                if PART_FILE.match(name):
                    if rel not in referenced:
                        candidates.append(name)
                elif TMP_FILE.match(name):
                    unlink(pdir / name)
                else:
                    foreign.append(rel)
        if candidates:  # only then are the older retained versions read (the common case reads none)
            for v in retained:
                if v == latest.version:
                    continue
                try:
                    man = Manifest.from_json(versions[v].read_text(), versions[v])
                except (IndexFormatError, OSError):  # unreadable old version: it cannot be opened anyway
                    unlink(versions.pop(v))
                    continue
                for p in man.parts:
                    referenced.update(p[key] for key in part_file_keys(p))
            for name in candidates:
                if f"{PARTS}/{name}" not in referenced:
                    unlink(pdir / name)
        for sidecar in self.sidecars:  # folders of other stages beside the parts (e.g. prune/)
            removed += sidecar.collect_garbage(self.root, latest)
        if foreign:
            logger.warning("%s: ignoring files that are not part of the index: %s", self.root,
                           ", ".join(sorted(foreign)))
        if removed:
            fsync_dir(self.root)
            if pdir.is_dir():
                fsync_dir(pdir)
        return removed

    # -- compaction ------------------------------------------------------------------------------------
    def compact(
        self,
        target_part_bytes: int = TARGET_PART_BYTES,
        min_dead_fraction: float = 0.1,
        full: bool = False,
        keep_versions: int = KEEP_VERSIONS,
        progress: bool = False,
    ) -> CompactReport:
        """Merge small parts and drop deleted rows into new parts, committed as one new version (see
        :func:`maxsim.index.compact.compact`). Needs the writer lock."""
        self._require_lock("compact")
        return compact(self, target_part_bytes=target_part_bytes, min_dead_fraction=min_dead_fraction,
                       full=full, keep_versions=keep_versions, progress=progress)
