"""Checksums of part files: written at commit, verified before the bytes are used.

Each part file is covered by CRC-32 checksums of consecutive byte ranges that tile it: one range per
record batch (the file's header goes with the first, its footer is the last range). They are computed
while the file is written (:class:`ChecksumSink`: no second read) and recorded in the part's manifest
entry::

    "checksums": {"algorithm": "crc32", "segments": [[end, crc], ...], "tokens": [[end, crc], ...]}

Verification (:class:`FileCheck`): a snapshot checks the size of both files when it opens a part, the
segment table (ids, times, thumbnails: a few percent of an index's bytes) in full, and each token batch
the first time a search, a compaction or a prune build uses it in this process, so that damaged bytes are
reported (:class:`~maxsim.errors.IndexFormatError`) and never scored, while opening an index of many GB
stays cheap. ``maxsim verify`` checks every byte at once. Parts written before checksums existed have
none: they are used as they are (``maxsim compact --full`` rewrites them with checksums).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from maxsim.errors import IndexFormatError

ALGORITHM = "crc32"


class ChecksumSink:
    """A binary file being written, wrapped to keep the CRC-32 of each byte range between :meth:`mark`
    calls (what :func:`pyarrow.PythonFile` needs of a file: write, flush, close)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.pos = 0
        self._crc = 0
        self.ranges: list[list[int]] = []  # [end, crc] of each range marked so far

    def write(self, data: Any) -> int:
        self.f.write(data)
        view = memoryview(data)
        self._crc = zlib.crc32(view, self._crc)
        self.pos += view.nbytes
        return view.nbytes

    def mark(self) -> None:
        """End the current range here (after a record batch, or after the footer)."""
        if self.ranges and self.ranges[-1][0] == self.pos:
            return
        self.ranges.append([self.pos, self._crc])
        self._crc = 0

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self.f.closed

    def close(self) -> None:
        self.f.close()


def crc_of(buf: Any, start: int, end: int) -> int:
    """CRC-32 of ``buf[start:end]`` (a memory map or buffer), without copying it."""
    return zlib.crc32(memoryview(buf)[start:end])


def check_spec(spec: Any, path: Path) -> list[tuple[int, int]]:
    """A file's ``[[end, crc], ...]`` checksum list from a manifest, checked: increasing ends."""
    ok = isinstance(spec, list) and spec and all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and x >= 0 for x in r) for r in spec)
    ends = [r[0] for r in spec] if ok else []
    if not ok or any(b <= a for a, b in zip([0, *ends[:-1]], ends, strict=True)):
        raise IndexFormatError(f"{path}: its checksums in the manifest are malformed ({str(spec)[:120]})")
    return [(int(e), int(c)) for e, c in spec]


class FileCheck:
    """The checksums of one mapped part file, each range verified at most once (thread-safe)."""

    def __init__(self, path: Path, mapped: pa.MemoryMappedFile, spec: Sequence[Sequence[int]], root: Path
                 ) -> None:
        self.path = path
        self.root = root
        self.ranges = check_spec(list(map(list, spec)), path)
        self._map = mapped
        self._ok = [False] * len(self.ranges)
        self._lock = threading.Lock()
        size = mapped.size()
        if size != self.ranges[-1][0]:
            raise IndexFormatError(
                f"{path}: {size} bytes, but {self.ranges[-1][0]} were written at commit: the file was "
                f"truncated or overwritten after it was written. {damage_hint(root)}"
            )

    @property
    def verified(self) -> bool:
        return all(self._ok)

    def bounds(self, i: int) -> tuple[int, int]:
        return (self.ranges[i - 1][0] if i else 0), self.ranges[i][0]

    def problem(self, i: int) -> str | None:
        """What is wrong with range ``i`` (None: it matches); never cached."""
        lo, hi = self.bounds(i)
        got = crc_of(self._map.read_at(hi - lo, lo), 0, hi - lo)
        want = self.ranges[i][1]
        if got == want:
            return None
        return (f"bytes {lo}-{hi} (range {i + 1} of {len(self.ranges)}) do not match the checksum written "
                f"at commit (crc32 {got:08x}, expected {want:08x})")

    def verify(self, i: int) -> None:
        """Check range ``i`` unless it was already found sound; IndexFormatError when it is damaged."""
        if self._ok[i]:
            return
        problem = self.problem(i)
        if problem is not None:
            raise IndexFormatError(f"{self.path}: {problem}: the file was damaged after it was written. "
                                   f"{damage_hint(self.root)}")
        with self._lock:
            self._ok[i] = True

    def verify_all(self) -> None:
        for i in range(len(self.ranges)):
            self.verify(i)


def damage_hint(root: Path) -> str:
    return (f"Nothing was scored from it. `maxsim verify {root}` lists what is damaged; `maxsim repair "
            f"{root}` removes the videos stored there (re-ingest them afterwards), or restore the file from "
            "a backup")
