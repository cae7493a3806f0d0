"""Writing index files safely: atomic replacement with fsync, the failpoints the crash tests kill at, OS
write errors turned into :class:`~maxsim.errors.IndexWriteError`, memory-mapped opening of Arrow files, and
the names of retained manifest versions.

``open_sink`` is the one place new index files are opened for writing: tests replace it to simulate a full
disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from maxsim.errors import IndexError_, IndexFormatError, IndexWriteError
from maxsim.index.format import MANIFESTS, VERSION_FILE


# -- failpoints: deterministic crash points for tests ----------------------------------------------------
def failpoint(name: str) -> None:
    """Crash here (SIGKILL) when the environment asks for it: ``MAXSIM_CRASH_AT=name[:n]``.

    The n-th time (default 1) this process reaches the named step it kills itself, as a power cut or an
    OOM kill would. Used by the crash-safety tests; costs one dictionary lookup otherwise.
    """
    spec = os.environ.get("MAXSIM_CRASH_AT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _FAILPOINT_COUNTS[name] = _FAILPOINT_COUNTS.get(name, 0) + 1
    if _FAILPOINT_COUNTS[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_FAILPOINT_COUNTS: dict[str, int] = {}



def open_sink(path: Path):
    """A new file for writing (a seam for tests that simulate a full disk)."""
    return open(path, "xb")




def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_atomic(path: Path, data: bytes, step: str) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new content, never a part of it."""
    tmp = tmp_name(path)
    try:
        with open_sink(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        failpoint(step + ".tmp")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)



def version_path(root: Path, version: int) -> Path:
    return root / MANIFESTS / f"v{version:09d}.json"



def version_files(root: Path) -> list[int]:
    """Versions that have a file in manifests/ (committed or not), sorted."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(root / MANIFESTS):
            m = VERSION_FILE.match(name)
            if m:
                out.append(int(m.group(1)))
    return sorted(out)


def retained_versions(root: Path, latest: int) -> list[int]:
    """The versions that can still be opened: the latest and those with a file in manifests/ below it."""
    return sorted({latest, *(v for v in version_files(root) if v <= latest)})


def map_file(path: Path, version: int | None = None) -> pa.MemoryMappedFile:
    """Memory-map an index file for reading; ``version``: the index version that lists it, named when it
    is missing."""
    if not path.is_file():
        where = f" of version {version}" if version is not None else ""
        raise IndexFormatError(
            f"{path}: listed in the manifest{where} but missing from the index folder (the index was "
            "damaged: files deleted by hand or an incomplete copy)"
        )
    try:
        return pa.memory_map(str(path), "r")
    except OSError as e:
        raise IndexFormatError(f"{path}: cannot be read ({e})") from e


def open_ipc(path: Path, version: int | None = None, mapped: pa.MemoryMappedFile | None = None
             ) -> pa.ipc.RecordBatchFileReader:
    """Open an Arrow IPC file memory-mapped (no copy of its buffers): ``mapped`` if given, else ``path``
    mapped here (see :func:`map_file`)."""
    if mapped is None:
        mapped = map_file(path, version)
    try:
        return pa.ipc.open_file(mapped)
    except (pa.ArrowInvalid, OSError) as e:
        raise IndexFormatError(f"{path}: not a readable Arrow IPC file ({e})") from e


# -- the store -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def clear_write_errors(root: Path, version: int | None) -> Iterator[None]:
    """Turn OS write errors into :class:`IndexWriteError` naming the index and the version kept."""
    try:
        yield
    except IndexError_:
        raise
    except OSError as e:
        if e.errno is None:
            raise
        what = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large", errno.EROFS: "read-only file system"}.get(
            e.errno or 0, e.strerror or str(e))
        kept = "no index was created" if version is None else f"the index is unchanged at version {version}"
        err = IndexWriteError(e.errno, f"{root}: writing the index failed ({what}); {kept}")
        raise err from e

