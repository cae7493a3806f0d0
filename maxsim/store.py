"""The index on disk: Arrow IPC files, memory-mapped on open, ragged, committed atomically, versioned.

An index folder holds

- ``manifest.json``: the committed state of the latest version (format version, index version, encoder,
  dim, storage dtype, the parts, the catalog of videos, the deleted segment id ranges, the history of
  commits). A commit writes every new file first, then replaces this file with ``os.replace``: readers
  see the old or the new version, never a half-written one. Replacing it is the commit point.
- ``manifests/v<version>.json``: an immutable copy of each retained version, so that a past version can be
  opened read-only (``Store.snapshot(version=N)``). The last :data:`KEEP_VERSIONS` are kept by default.
- ``parts/<part>.segments.arrow``: one row per segment (id, video path, video content hash, settings key,
  start, end, token batch and offset, token count, frame timestamps, thumbnail JPEG).
- ``parts/<part>.tokens.arrow``: the segments' token vectors as flat ``(tokens, dim)`` record batches,
  addressed by the segment rows (never padded); a segment never straddles two batches. The storage dtype
  (manifest ``dtype``) is float16, bfloat16 (stored as uint16 bits), float32, int8, or float8_e4m3fn
  (stored as uint8 bits); int8 and fp8 batches add a float32 ``scale`` column, one per token row (the
  vector is ``data * scale``, see :mod:`maxsim.kernels.quantize`). Parts are written
  in bounded record batches so that a writer holds a bounded window in memory.
- ``LOCK``: held (``flock``) by the one writer; the OS releases it when the writer dies. Readers never take
  it, so they never block (nor are blocked by) a writer.

The catalog (``videos`` in the manifest) maps each video path to its content hash, settings and the id
ranges of its segments, so that looking up, replacing or deleting a video touches only the manifest and
never the segment tables or token data: a delete costs O(segments of that video) plus rewriting the
manifest (whose size grows with the number of videos, about 100 bytes each).

Garbage collection (on every writer open, and after a compaction): files of a dead writer (temporary
manifests, parts no retained version references, version files newer than the committed one) are
removed; part files that no retained version references are removed; version files older than the
retained window are removed. Files that are not ours (other names) are left alone, with a warning when
they sit in ``parts/`` or ``manifests/``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from maxsim.kernels.quantize import quantize

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: video catalog, deleted id ranges, manifests/ (format 1 is read and upgraded)
MANIFEST = "manifest.json"
MANIFESTS = "manifests"
PARTS = "parts"
LOCK = "LOCK"
KEEP_VERSIONS = 8  # versions whose files garbage collection keeps by default (the latest included)
TARGET_PART_BYTES = 512 << 20  # token bytes a compacted part grows to before a new one starts

_PART_FILE = re.compile(r"^(p[0-9]{14}-[0-9a-f]{12})\.(segments|tokens)\.arrow$")
_VERSION_FILE = re.compile(r"^v([0-9]{9})\.json$")
_TMP_FILE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")

# Storage dtypes for token vectors: name -> (arrow value type, torch dtype of the stored bits).
_DTYPES: dict[str, tuple[pa.DataType, torch.dtype]] = {
    "float16": (pa.float16(), torch.float16),
    "bfloat16": (pa.uint16(), torch.bfloat16),  # Arrow has no bf16: raw bits, viewed as bf16
    "float32": (pa.float32(), torch.float32),
    "int8": (pa.int8(), torch.int8),  # + a float32 scale per token row
    "float8_e4m3fn": (pa.uint8(), torch.float8_e4m3fn),  # Arrow has no fp8: raw bits; + a scale per row
}
_NP_DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "int8": np.int8,
              "float8_e4m3fn": np.uint8}
# Quantised dtypes: their name in maxsim.kernels.quantize. Stored with one float32 scale per token row
# (the tokens file's ``scale`` column); a score uses ``data * scale``.
_SCALED = {"int8": "int8", "float8_e4m3fn": "fp8"}
STORAGE_DTYPES = tuple(_DTYPES)
_DTYPE_ALIASES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp8": "float8_e4m3fn",
                  "float8": "float8_e4m3fn", "e4m3": "float8_e4m3fn"}


def storage_dtype(name: str) -> str:
    """The canonical name of a storage dtype (aliases fp16, bf16, fp32, fp8 accepted)."""
    name = _DTYPE_ALIASES.get(str(name), str(name))
    if name not in _DTYPES:
        raise ValueError(
            f"unknown storage dtype {name!r}; expected one of {', '.join(STORAGE_DTYPES)} "
            f"(or {', '.join(_DTYPE_ALIASES)})"
        )
    return name


def _stored_bits(t: torch.Tensor) -> np.ndarray:
    """A tensor in a storage dtype as the numpy array Arrow stores (bf16 / fp8 as raw unsigned bits)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy()
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy()
    return t.numpy()

SEGMENT_SCHEMA = pa.schema(
    [
        ("segment_id", pa.int64()),
        ("video", pa.string()),
        ("video_hash", pa.string()),
        ("settings", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("token_batch", pa.int32()),
        ("token_offset", pa.int64()),
        ("token_count", pa.int32()),
        ("frame_times", pa.list_(pa.float32())),
        ("thumbnail", pa.binary()),
    ]
)

# facts about a video's file a catalog entry may hold (besides hash, settings, ranges, segments, tokens)
_FILE_FACTS = ("size", "mtime_ns")

_BATCH_BYTES = 128 << 20  # token bytes buffered before a record batch is written


class IndexError_(Exception):
    """Base class of index errors (named to avoid shadowing the builtin IndexError)."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """No index exists at the given path."""


class IndexFormatError(IndexError_):
    """The index folder is damaged, foreign or written by a newer format."""


class IndexTooNewError(IndexFormatError):
    """The index was written by a newer maxsim, in a format this version cannot read."""


class EncoderMismatchError(IndexError_):
    """The index was built with another encoder than the one given."""


class LockedError(IndexError_):
    """Another process is writing to the index."""


class VersionNotFoundError(IndexError_, KeyError):
    """The asked version of the index is not (or no longer) kept."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IndexWriteError(IndexError_, OSError):
    """Writing to the index failed (disk full, quota, I/O error); the committed index is unchanged."""


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


# -- id ranges -------------------------------------------------------------------------------------------
def ranges_from_ids(ids: Iterable[int]) -> list[list[int]]:
    """Sorted, merged half-open ranges ``[lo, hi)`` covering exactly the given ids."""
    arr = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
    if arr.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(arr) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [arr.size]])
    return [[int(arr[s]), int(arr[e - 1]) + 1] for s, e in zip(starts, ends, strict=True)]


def merge_ranges(*groups: Iterable[Sequence[int]]) -> list[list[int]]:
    """Union of half-open ranges, sorted and merged."""
    rs = sorted((int(lo), int(hi)) for g in groups for lo, hi in g if hi > lo)
    out: list[list[int]] = []
    for lo, hi in rs:
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def in_ranges(ids: np.ndarray, ranges: Sequence[Sequence[int]]) -> np.ndarray:
    """Boolean mask: which ids fall in one of the (sorted, disjoint) half-open ranges."""
    if not len(ranges):
        return np.zeros(ids.shape, dtype=bool)
    r = np.asarray(ranges, dtype=np.int64)
    pos = np.searchsorted(r[:, 0], ids, side="right") - 1
    ok = pos >= 0
    out = np.zeros(ids.shape, dtype=bool)
    out[ok] = ids[ok] < r[pos[ok], 1]
    return out


def _count(ranges: Iterable[Sequence[int]]) -> int:
    return int(sum(hi - lo for lo, hi in ranges))


@dataclass
class SegmentRecord:
    """One segment to add: its metadata and token vectors ``(n_tokens, dim)``."""

    video: str
    video_hash: str
    settings: str
    start: float
    end: float
    frame_times: Sequence[float]
    thumbnail: bytes | None
    tokens: torch.Tensor


@dataclass
class Manifest:
    """The committed state of one version of an index.

    ``videos`` maps a video path to ``{"hash", "settings", "ranges", "segments", "tokens"}`` (``ranges``:
    its segment ids as half-open ``[lo, hi)`` ranges), plus, when known, ``"size"`` and ``"mtime_ns"`` of
    the file when it was ingested (entries written before they were recorded lack them). ``deleted`` holds
    the half-open id ranges of segments that are no longer live but still sit in a part (until a
    compaction drops them).
    """

    encoder: dict[str, Any]
    dim: int
    dtype: str = "float16"
    version: int = 0
    format_version: int = FORMAT_VERSION
    next_segment_id: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)
    videos: dict[str, dict[str, Any]] | None = field(default_factory=dict)
    deleted: list[list[int]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        # compact: the C encoder (json's indent= falls back to pure Python, ~20x slower on big catalogs)
        return json.dumps(self.__dict__, separators=(",", ":"))

    def copy(self) -> Manifest:
        return Manifest(**json.loads(self.to_json()))

    @property
    def n_deleted(self) -> int:
        """Segments deleted but still stored (until compaction)."""
        return _count(self.deleted)

    @property
    def n_segments(self) -> int:
        """Live segments."""
        return sum(p["n_segments"] for p in self.parts) - self.n_deleted

    @classmethod
    def from_json(cls, text: str, path: Path) -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise IndexFormatError(f"{path}: not a valid manifest ({e})") from e
        if not isinstance(data, dict) or "format_version" not in data:
            raise IndexFormatError(f"{path}: not a maxsim manifest (no format_version)")
        fv = data["format_version"]
        if not isinstance(fv, int) or fv > FORMAT_VERSION:
            raise IndexTooNewError(
                f"{path}: written by a newer maxsim (format {fv}; this version reads up to "
                f"{FORMAT_VERSION}): upgrade maxsim to open it"
            )
        known = set(cls.__dataclass_fields__)
        if "videos" not in data:
            data["videos"] = None  # written before the catalog existed: rebuilt from the segment tables
        deleted = data.get("deleted", [])
        if deleted and not isinstance(deleted[0], list):  # a plain list of ids
            data["deleted"] = ranges_from_ids(deleted)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise IndexFormatError(f"{path}: manifest is missing fields ({e})") from e


# -- files -----------------------------------------------------------------------------------------------
def _open_sink(path: Path):
    """A new file for writing (a seam for tests that simulate a full disk)."""
    return open(path, "xb")



def column_numpy(table: pa.Table | pa.RecordBatch, name: str) -> np.ndarray:
    """A fixed-width, null-free column as a numpy array, read straight from its buffers.

    (pyarrow's own ``to_numpy`` imports pandas on first use when it is installed: ~30 MiB and half a
    second that opening an index should not pay.)
    """
    col = table.column(name)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    dtype = np.dtype(col.type.to_pandas_dtype())
    parts = []
    for ch in chunks:
        if ch.null_count:
            raise IndexFormatError(f"column {name!r} has {ch.null_count} missing values")
        buf = ch.buffers()[1]
        parts.append(np.frombuffer(buf, dtype=dtype, count=len(ch), offset=ch.offset * dtype.itemsize))
    if not parts:
        return np.empty(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _write_atomic(path: Path, data: bytes, step: str) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new content, never a part of it."""
    tmp = _tmp_name(path)
    try:
        with _open_sink(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        failpoint(step + ".tmp")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _version_path(root: Path, version: int) -> Path:
    return root / MANIFESTS / f"v{version:09d}.json"


def read_manifest(root: str | Path, version: int | None = None) -> Manifest:
    """The committed manifest of the index at ``root`` (the latest, or a retained ``version``)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        if not root.exists():
            raise IndexNotFoundError(f"no index at {root} (the folder does not exist)")
        raise IndexNotFoundError(f"no index at {root} ({MANIFEST} is missing)")
    try:
        try:
            latest = Manifest.from_json(path.read_text(), path)
        except UnicodeDecodeError as e:
            raise IndexFormatError(f"{path}: not a valid manifest ({e})") from e
    except IndexFormatError as e:
        kept = [] if isinstance(e, IndexTooNewError) else _version_files(root)
        if kept:
            newest = _version_path(root, kept[-1])
            raise IndexFormatError(
                f"{e}. Copies of the last committed versions are kept in {root / MANIFESTS}: to recover, "
                f"copy the newest one over it (cp {newest} {path})"
            ) from e
        raise
    if version is None or version == latest.version:
        return latest
    if version > latest.version or version < 0:
        raise VersionNotFoundError(f"{root}: no version {version} (the latest is {latest.version})")
    vpath = _version_path(root, version)
    if not vpath.is_file():
        raise VersionNotFoundError(
            f"{root}: version {version} is no longer kept (retained versions: "
            f"{_retained_versions(root, latest.version)}); garbage collection keeps the last "
            f"{KEEP_VERSIONS} by default"
        )
    return Manifest.from_json(vpath.read_text(), vpath)


def _version_files(root: Path) -> list[int]:
    """Versions that have a file in manifests/ (committed or not), sorted."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(root / MANIFESTS):
            m = _VERSION_FILE.match(name)
            if m:
                out.append(int(m.group(1)))
    return sorted(out)


def _retained_versions(root: Path, latest: int) -> list[int]:
    return sorted({latest, *(v for v in _version_files(root) if v <= latest)})


# -- writing a part --------------------------------------------------------------------------------------
@dataclass
class _Mark:
    n_ids: int
    n_buffered: int
    n_flushes: int
    # catalog entries as they were at the mark, saved the first time a video is touched after it (None: the
    # video was not in the part): O(videos touched since the mark), never a copy of the whole catalog
    undo: dict[str, dict[str, Any] | None]


class PartWriter:
    """Writes one part's segment table and token matrix, batch by batch, without committing them.

    It tracks the videos it holds (the part's catalog) and the ids of rows that were written but must not
    become live (see :meth:`rollback`). :meth:`close` returns the entry to pass to :meth:`Store.commit`.
    """

    def __init__(self, root: Path, dim: int, dtype: str, version: int | None = None) -> None:
        self.root = root
        self.dim = dim
        self.dtype = dtype
        self.version = version  # the committed version this part builds on (named in write errors)
        self.part_id = f"p{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        (root / PARTS).mkdir(parents=True, exist_ok=True)
        self.seg_path = root / PARTS / f"{self.part_id}.segments.arrow"
        self.tok_path = root / PARTS / f"{self.part_id}.tokens.arrow"
        value_type, self._torch_dtype = _DTYPES[dtype]
        self._scaled = _SCALED.get(dtype)
        fields = [("tokens", pa.list_(value_type, dim))]
        if self._scaled:
            fields.append(("scale", pa.float32()))
        self._tok_schema = pa.schema(fields)
        self._files: list[Any] = []
        self._sinks: list[Any] = []
        self._writers: list[Any] = []
        try:
            for path, schema in ((self.seg_path, SEGMENT_SCHEMA), (self.tok_path, self._tok_schema)):
                f = _open_sink(path)
                self._files.append(f)
                sink = pa.PythonFile(f, mode="w")
                self._sinks.append(sink)
                self._writers.append(pa.ipc.new_file(sink, schema))
        except BaseException:
            self.abort()
            raise
        self._rows: list[dict[str, Any] | pa.Table] = []  # one dict per add(), one table per add_rows()
        self._toks: list[np.ndarray] = []
        self._scales: list[np.ndarray] = []  # per token row, for quantised dtypes
        self._buffered_tokens = 0
        self._buffered_rows = 0
        self._batch = 0
        self._ids: list[int] = []
        # smallest and largest id ever written to the files, rolled-back rows included: the part's id span
        # must cover its dead rows, or compaction would drop the tombstones that hide them
        self._min_id: int | None = None
        self._max_id: int | None = None
        self._undo: dict[str, dict[str, Any] | None] | None = None  # the latest mark's undo log
        self.videos: dict[str, dict[str, Any]] = {}
        self.dead: list[list[int]] = []
        self.n_segments = 0
        self.n_tokens = 0
        self.closed = False

    # -- adding rows -----------------------------------------------------------------------------------
    def add(self, segment_id: int, rec: SegmentRecord) -> None:
        """Buffer one segment; writes a record batch when the buffer is large."""
        t = rec.tokens.detach().to("cpu")
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(
                f"segment {segment_id}: tokens of shape {tuple(t.shape)}; expected (n, {self.dim})"
            )
        if self._scaled:
            t, scale = quantize(t.float(), self._scaled, per="token")
            self._scales.append(scale.numpy())
        else:
            t = t.to(self._torch_dtype).contiguous()
        self._rows.append(
            {
                "segment_id": int(segment_id),
                "video": rec.video,
                "video_hash": rec.video_hash,
                "settings": rec.settings,
                "start": float(rec.start),
                "end": float(rec.end),
                "token_count": t.shape[0],
                "frame_times": [float(x) for x in rec.frame_times],
                "thumbnail": rec.thumbnail,
            }
        )
        self._toks.append(_stored_bits(t))
        self._note(segment_id, rec.video, rec.video_hash, rec.settings, t.shape[0])
        self._buffered_tokens += t.shape[0]
        self._buffered_rows += 1
        failpoint("part.add")
        if self._buffered_tokens * self.dim * t.element_size() >= _BATCH_BYTES:
            self.flush()

    def add_rows(self, rows: pa.Table, tokens: np.ndarray, scales: np.ndarray | None = None) -> None:
        """Buffer whole segment rows (``SEGMENT_SCHEMA`` columns) and their tokens in stored bits (and,
        for quantised dtypes, their float32 scales per token row), copied unchanged.

        Used by compaction: rows keep their ids; they are not added to this part's catalog.
        """
        counts = column_numpy(rows, "token_count").astype(np.int64)
        if int(counts.sum()) != tokens.shape[0]:
            raise ValueError(f"{int(counts.sum())} tokens claimed by the rows, {tokens.shape[0]} given")
        if bool(self._scaled) != (scales is not None) or (scales is not None and len(scales) != len(tokens)):
            need = "one scale per token row" if self._scaled else "no scales"
            raise ValueError(f"a {self.dtype} part needs {need}")
        self._rows.append(rows)
        self._toks.append(tokens)
        if scales is not None:
            self._scales.append(np.asarray(scales, dtype=np.float32))
        ids = rows.column("segment_id").to_pylist()
        self._ids += ids
        if ids:
            self._span(min(ids), max(ids))
        self._buffered_tokens += tokens.shape[0]
        self._buffered_rows += rows.num_rows
        if self._buffered_tokens * self.dim * tokens.itemsize >= _BATCH_BYTES:
            self.flush()

    def _span(self, lo: int, hi: int) -> None:
        self._min_id = lo if self._min_id is None else min(self._min_id, lo)
        self._max_id = hi if self._max_id is None else max(self._max_id, hi)

    def _note(self, segment_id: int, video: str, digest: str, settings: str, n_tokens: int) -> None:
        self._ids.append(int(segment_id))
        self._span(int(segment_id), int(segment_id))
        v = self.videos.get(video)
        if self._undo is not None and video not in self._undo:
            self._undo[video] = None if v is None else {**v, "ranges": [list(r) for r in v["ranges"]]}
        if v is None:
            v = self.videos[video] = {"hash": digest, "settings": settings, "ranges": [], "segments": 0,
                                      "tokens": 0}
        v["hash"], v["settings"] = digest, settings
        if v["ranges"] and v["ranges"][-1][1] == segment_id:
            v["ranges"][-1][1] = segment_id + 1
        else:
            v["ranges"].append([segment_id, segment_id + 1])
        v["segments"] += 1
        v["tokens"] += int(n_tokens)

    def note_file(self, video: str, **info: Any) -> None:
        """Record facts about a video's file in its catalog entry (e.g. ``size``, ``mtime_ns``)."""
        entry = self.videos.get(video)
        if entry is None:
            raise KeyError(f"video {video!r} has no segment in this part")
        entry.update(info)

    # -- taking rows back ------------------------------------------------------------------------------
    def mark(self) -> _Mark:
        """A point to :meth:`rollback` to (e.g. before the segments of one video); only the latest mark can
        be rolled back to. Costs O(1): catalog entries are saved when first touched after it."""
        self._undo = {}
        return _Mark(len(self._ids), self._buffered_rows, self._batch, self._undo)

    def rollback(self, mark: _Mark) -> None:
        """Take back every row added since ``mark`` (only :meth:`add` rows).

        Rows still buffered are dropped; rows already written to the files are recorded as dead, so the
        commit tombstones them: they never become live.
        """
        if mark.undo is not self._undo:
            raise RuntimeError("PartWriter.rollback: only the latest mark can be rolled back to")
        after = self._ids[mark.n_ids :]
        if not after:
            return
        if self._batch == mark.n_flushes:
            drop = len(after)
        else:  # a flush happened since the mark: everything buffered now came after it
            drop = self._buffered_rows
            self.dead = merge_ranges(self.dead, ranges_from_ids(after[: len(after) - drop]))
        if drop:
            keep = len(self._rows) - drop
            if any(not isinstance(r, dict) for r in self._rows[keep:]):
                raise RuntimeError("PartWriter.rollback: rows added with add_rows cannot be rolled back")
            dropped_tokens = sum(int(t.shape[0]) for t in self._toks[keep:])
            del self._rows[keep:], self._toks[keep:]
            if self._scaled:
                del self._scales[keep:]
            self._buffered_rows -= drop
            self._buffered_tokens -= dropped_tokens
        del self._ids[mark.n_ids :]
        for video, entry in mark.undo.items():
            if entry is None:
                self.videos.pop(video, None)
            else:
                self.videos[video] = entry
        mark.undo.clear()

    # -- writing ---------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered segments as one record batch of each file."""
        if not self._rows:
            return
        with _clear_write_errors(self.root, self.version):
            self._flush()

    def _flush(self) -> None:
        tables = []
        pending: list[dict[str, Any]] = []
        for r in self._rows:
            if isinstance(r, dict):
                pending.append(r)
                continue
            if pending:
                tables.append(_rows_table(pending))
                pending = []
            tables.append(r.select(_ROW_COLUMNS).cast(_ROW_SCHEMA))
        if pending:
            tables.append(_rows_table(pending))
        rows = pa.concat_tables(tables).combine_chunks()
        counts = column_numpy(rows, "token_count").astype(np.int64)
        offsets = np.zeros(rows.num_rows, dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        seg = pa.table(
            {
                **{name: rows.column(name) for name in ("segment_id", "video", "video_hash", "settings",
                                                        "start", "end")},
                "token_batch": pa.array(np.full(rows.num_rows, self._batch, dtype=np.int32)),
                "token_offset": pa.array(offsets),
                "token_count": rows.column("token_count"),
                "frame_times": rows.column("frame_times"),
                "thumbnail": rows.column("thumbnail"),
            },
            schema=SEGMENT_SCHEMA,
        )
        flat = np.concatenate(self._toks) if self._toks else np.zeros((0, self.dim), _NP_DTYPES[self.dtype])
        values = pa.array(flat.reshape(-1), type=self._tok_schema.field(0).type.value_type)
        tok = pa.FixedSizeListArray.from_arrays(values, self.dim)
        cols = [tok]
        if self._scaled:
            cols.append(pa.array(np.concatenate(self._scales) if self._scales else np.zeros(0, np.float32),
                                 type=pa.float32()))
        self._writers[1].write_batch(pa.record_batch(cols, schema=self._tok_schema))
        for batch in seg.to_batches(max_chunksize=max(1, seg.num_rows)):
            self._writers[0].write_batch(batch)
        self.n_segments += rows.num_rows
        self.n_tokens += self._buffered_tokens
        self._rows, self._toks, self._scales, self._buffered_tokens, self._buffered_rows = [], [], [], 0, 0
        self._batch += 1
        failpoint("part.flush")

    def close(self) -> dict[str, Any]:
        """Finish both files (fsynced) and return the part's entry for :meth:`Store.commit`."""
        self.flush()
        with _clear_write_errors(self.root, self.version):
            for w, sink, f in zip(self._writers, self._sinks, self._files, strict=True):
                w.close()
                sink.flush()
                f.flush()
                os.fsync(f.fileno())
                sink.close()
                f.close()
            _fsync_dir(self.root / PARTS)
        self.closed = True
        failpoint("part.close")
        return {
            "id": self.part_id,
            "segments": f"{PARTS}/{self.seg_path.name}",
            "tokens": f"{PARTS}/{self.tok_path.name}",
            "n_segments": self.n_segments,
            "n_tokens": self.n_tokens,
            "token_bytes": self.n_tokens * (self.dim * np.dtype(_NP_DTYPES[self.dtype]).itemsize
                                            + (4 if self._scaled else 0)),
            "min_id": 0 if self._min_id is None else self._min_id,
            "max_id": -1 if self._max_id is None else self._max_id,
            "videos": self.videos,
            "dead": self.dead,
        }

    def abort(self) -> None:
        """Drop the part's files."""
        for obj in (*self._writers, *self._sinks, *self._files):
            with contextlib.suppress(Exception):
                obj.close()
        for p in (self.seg_path, self.tok_path):
            with contextlib.suppress(OSError):
                p.unlink()


_ROW_COLUMNS = ["segment_id", "video", "video_hash", "settings", "start", "end", "token_count", "frame_times",
                "thumbnail"]
_ROW_SCHEMA = pa.schema([SEGMENT_SCHEMA.field(n) for n in _ROW_COLUMNS])


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=_ROW_SCHEMA)


# -- reading a version -----------------------------------------------------------------------------------
@dataclass
class Chunk:
    """A contiguous run of segments of one part whose tokens are one memory-mapped matrix."""

    tokens: torch.Tensor  # (n_tokens, dim), read-only view of the mapped file (in the storage dtype)
    offsets: torch.Tensor  # (n_segments + 1,) int64
    rows: np.ndarray  # row numbers of these segments in the snapshot's segment table
    part: int = 0  # index of the part in the manifest
    # int8 / fp8 indexes: float32 (n_tokens,) dequantisation scales, mapped (pass as d_scale); else None
    scales: torch.Tensor | None = None


# a part as mapped: its segment table, and per token batch (tokens, offsets, rows local to the part)
_LoadedPart = tuple[pa.Table, list[tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor | None]]]


class Snapshot:
    """A read-only view of one committed version: segment metadata and memory-mapped tokens.

    Opening maps the part files; only the small numeric columns (ids, times) are copied into memory
    (about 40 bytes per segment). Token vectors and thumbnails stay in the mapped files.
    """

    def __init__(self, root: Path, manifest: Manifest, previous: Snapshot | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.chunks: list[Chunk] = []
        tables = []
        self.part_rows: list[tuple[int, int]] = []  # table row span of each part
        # per part id: its mapped segment table and (tokens, local offsets, local rows) per batch; parts are
        # immutable, so a snapshot opened after another reuses the mappings of the parts they share
        self._parts: dict[str, _LoadedPart] = {}
        reuse = previous._parts if previous is not None and previous.root == root else {}
        row0 = 0
        for p_i, part in enumerate(manifest.parts):
            loaded = reuse.get(part["id"])
            if loaded is None or loaded[0].num_rows != part["n_segments"]:
                loaded = self._load_part(part)
            self._parts[part["id"]] = loaded
            seg, batches = loaded
            for tokens, offsets, sel, scales in batches:
                self.chunks.append(Chunk(tokens, offsets, sel + row0, p_i, scales))
            tables.append(seg)
            self.part_rows.append((row0, row0 + seg.num_rows))
            row0 += seg.num_rows
        # zero-copy: the table's chunks are the mapped record batches (thumbnails are never copied)
        self.table = pa.concat_tables(tables) if tables else SEGMENT_SCHEMA.empty_table()
        self.segment_ids = column_numpy(self.table, "segment_id")
        self.starts = column_numpy(self.table, "start")
        self.ends = column_numpy(self.table, "end")
        # where each table row's tokens live: chunk number and position inside the chunk (read by the
        # pruned search too)
        self.row_chunk = np.full(self.table.num_rows, -1, dtype=np.int64)
        self.row_local = np.zeros(self.table.num_rows, dtype=np.int64)
        for c, ch in enumerate(self.chunks):
            self.row_chunk[ch.rows] = c
            self.row_local[ch.rows] = np.arange(ch.rows.size)
        self.live = ~in_ranges(self.segment_ids, manifest.deleted)
        if manifest.videos is None:  # an index written before the catalog: build it from the tables
            manifest.videos = _catalog_from_table(self.table, self.live)

    def _load_part(self, part: dict[str, Any]) -> _LoadedPart:
        root, manifest = self.root, self.manifest
        seg_path, tok_path = root / part["segments"], root / part["tokens"]
        seg = _open_ipc(seg_path, manifest).read_all()
        if seg.schema.names != SEGMENT_SCHEMA.names:
            raise IndexFormatError(f"{seg_path}: unexpected columns {seg.schema.names}")
        if seg.num_rows != part["n_segments"]:
            raise IndexFormatError(
                f"{seg_path}: {seg.num_rows} segments, the manifest says {part['n_segments']}"
            )
        tok_reader = _open_ipc(tok_path, manifest)
        batch_ids = column_numpy(seg, "token_batch")
        counts = column_numpy(seg, "token_count").astype(np.int64)
        batches = []
        for b in range(tok_reader.num_record_batches):
            sel = np.flatnonzero(batch_ids == b)
            if sel.size == 0:
                continue
            tokens, scales = self._tokens(tok_reader.get_batch(b), tok_path)
            offsets = np.zeros(sel.size + 1, dtype=np.int64)
            np.cumsum(counts[sel], out=offsets[1:])
            if offsets[-1] != tokens.shape[0]:
                raise IndexFormatError(
                    f"{tok_path}: batch {b} has {tokens.shape[0]} token rows but its segments claim "
                    f"{offsets[-1]}"
                )
            batches.append((tokens, torch.from_numpy(offsets), sel, scales))
        return seg, batches

    def _tokens(self, batch: pa.RecordBatch, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A record batch's token matrix (and float32 scales for quantised dtypes), zero-copy views."""
        scaled = self.manifest.dtype in _SCALED
        if batch.num_columns != (2 if scaled else 1):
            raise IndexFormatError(
                f"{path}: columns {batch.schema.names}, manifest says {self.manifest.dtype}"
            )
        col = batch.column(0)
        dim = self.manifest.dim
        if col.type.list_size != dim:
            raise IndexFormatError(f"{path}: token dim {col.type.list_size}, manifest says {dim}")
        values = col.values
        np_dtype = _NP_DTYPES[self.manifest.dtype]
        width = np.dtype(np_dtype).itemsize
        if values.type.bit_width != width * 8:
            raise IndexFormatError(f"{path}: {values.type} tokens, manifest says {self.manifest.dtype}")
        start = (values.offset + col.offset * dim) * width
        arr = np.frombuffer(values.buffers()[1], dtype=np_dtype, count=len(col) * dim, offset=start)
        scales = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory map: never written
            t = torch.from_numpy(arr.reshape(-1, dim))
            if scaled:
                sc = batch.column(1)
                if sc.type != pa.float32() or sc.null_count:
                    raise IndexFormatError(f"{path}: scale column of type {sc.type}; expected float32")
                scales = torch.from_numpy(column_numpy(batch, batch.schema.names[1]))
        if self.manifest.dtype in ("bfloat16", "float8_e4m3fn"):
            t = t.view(_DTYPES[self.manifest.dtype][1])
        return t, scales

    @property
    def version(self) -> int:
        return self.manifest.version

    def __len__(self) -> int:
        return int(self.live.sum())

    def rows_of(self, videos: Iterable[str]) -> np.ndarray:
        """Boolean mask of the live table rows of the given video paths (looked up in the catalog)."""
        cat = self.manifest.videos or {}
        ranges = merge_ranges(*(cat[v]["ranges"] for v in videos if v in cat))
        return in_ranges(self.segment_ids, ranges) & self.live

    def segment_tokens(self, row: int) -> torch.Tensor:
        """Token vectors of the segment in table row ``row``: a view in the storage dtype, or for int8 /
        fp8 indexes a float32 copy with the scales applied (see :meth:`segment_data` for the bytes)."""
        data, scale = self.segment_data(row)
        return data if scale is None else data.float() * scale[:, None]

    def segment_data(self, row: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stored token matrix of the segment in table row ``row`` and its scales (None unless int8 /
        fp8): zero-copy views of the mapped file."""
        ch = self.chunks[int(self.row_chunk[row])]
        i = int(self.row_local[row])
        lo, hi = int(ch.offsets[i]), int(ch.offsets[i + 1])
        return ch.tokens[lo:hi], None if ch.scales is None else ch.scales[lo:hi]


def _catalog_from_table(table: pa.Table, live: np.ndarray) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if table.num_rows == 0:
        return out
    videos = table.column("video").to_pylist()
    hashes = table.column("video_hash").to_pylist()
    settings = table.column("settings").to_pylist()
    counts = column_numpy(table, "token_count")
    ids = column_numpy(table, "segment_id")
    for row in np.flatnonzero(live):
        v = out.setdefault(videos[row], {"hash": hashes[row], "settings": settings[row], "ids": [],
                                         "segments": 0, "tokens": 0})
        v["ids"].append(int(ids[row]))
        v["segments"] += 1
        v["tokens"] += int(counts[row])
    for v in out.values():
        v["ranges"] = ranges_from_ids(v.pop("ids"))
    return out


def _open_ipc(path: Path, manifest: Manifest | None = None) -> pa.ipc.RecordBatchFileReader:
    """Open an Arrow IPC file memory-mapped (no copy of its buffers)."""
    if not path.is_file():
        where = f" of version {manifest.version}" if manifest is not None else ""
        raise IndexFormatError(
            f"{path}: listed in the manifest{where} but missing from the index folder (the index was "
            "damaged: files deleted by hand or an incomplete copy)"
        )
    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except (pa.ArrowInvalid, OSError) as e:
        raise IndexFormatError(f"{path}: not a readable Arrow IPC file ({e})") from e


def _tombstones_of_kept_parts(snap: Snapshot, deleted: Sequence[Sequence[int]], kept: Sequence[int]
                              ) -> list[list[int]]:
    """The tombstone ranges that still hide a stored row once only the parts ``kept`` (indices) remain.

    Read from the ids the kept parts actually store (not from their recorded id span, which indexes
    written before a rolled-back video's flushed rows were counted in it may get wrong).
    """
    if not deleted or not kept:
        return []
    mask = np.zeros(len(snap.segment_ids), dtype=bool)
    for i in kept:
        mask[slice(*snap.part_rows[i])] = True
    dead_ids = snap.segment_ids[mask & ~snap.live]
    if dead_ids.size == 0:
        return []
    r = np.asarray(deleted, dtype=np.int64)
    hit = np.unique(np.searchsorted(r[:, 0], dead_ids, side="right") - 1)
    return [[int(r[i, 0]), int(r[i, 1])] for i in hit]


# -- the store -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _clear_write_errors(root: Path, version: int | None) -> Iterator[None]:
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


@dataclass
class CompactReport:
    """What a compaction did."""

    parts_before: int
    parts_after: int
    parts_rewritten: int
    segments_dropped: int
    bytes_before: int
    bytes_after: int
    version: int | None  # the version committed, None when there was nothing to do
    files_removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Store:
    """An index folder: open or create it, read snapshots, commit new parts and deletions, compact."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._writing = False

    @classmethod
    def create(cls, root: str | Path, encoder: dict[str, Any], dim: int, dtype: str = "float16") -> Store:
        """Create an empty index (version 0) at ``root``; the folder may exist but must hold no index."""
        dtype = storage_dtype(dtype)
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        with store.writing():
            if (store.root / MANIFEST).exists():
                raise FileExistsError(f"an index already exists at {store.root}")
            man = Manifest(encoder=encoder, dim=int(dim), dtype=dtype)
            man.history.append({"version": 0, "time": time.time(), "op": "create"})
            with _clear_write_errors(store.root, None):
                (store.root / MANIFESTS).mkdir(exist_ok=True)
                _write_atomic(_version_path(store.root, 0), man.to_json().encode(), "commit.version_file")
                _write_atomic(store.root / MANIFEST, man.to_json().encode(), "commit.manifest")
        return store

    def manifest(self, version: int | None = None) -> Manifest:
        """The manifest of the latest committed version, or of a retained ``version``."""
        return read_manifest(self.root, version)

    def versions(self) -> list[int]:
        """The versions that can still be opened (the latest included), oldest first."""
        return _retained_versions(self.root, self.manifest().version)

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
                self.collect_garbage(keep_versions=KEEP_VERSIONS if gc else None)
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
        with _clear_write_errors(self.root, man.version):
            return PartWriter(self.root, man.dim, man.dtype, man.version)

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
    ) -> Manifest:
        """Atomically publish ``base`` changed as asked as the next version.

        In order: the videos in ``delete_videos`` lose their segments (tombstoned), the segment ids in
        ``deleted`` are tombstoned (single segments: the catalog entries of the videos they belong to are
        fixed up, which costs O(videos in the index); the engine deletes whole videos and never uses it,
        tests and tools that delete chosen segments do), the parts ``removed_parts`` (ids) leave the
        index, ``new_parts`` join it (their videos are added to the catalog; their dead rows tombstoned).
        With ``deleted_ranges`` the tombstones are replaced by these (compaction).
        """
        current = self.manifest()
        if current.version != base.version:
            raise IndexFormatError(
                f"{self.root}: the index moved from version {base.version} to {current.version} "
                "during this write"
            )
        man = current.copy()
        if man.videos is None:
            man.videos = Snapshot(self.root, man).manifest.videos
        catalog = man.videos
        tomb = [list(r) for r in man.deleted] if deleted_ranges is None else [list(r) for r in deleted_ranges]
        n_deleted_videos = 0
        for v in delete_videos:
            entry = catalog.pop(v, None)
            if entry is None:
                raise KeyError(f"video {v!r} is not in the index at {self.root}")
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
                    for key in _FILE_FACTS:  # the newest segments' file facts, or none
                        if key in entry:
                            old[key] = entry[key]
                        else:
                            old.pop(key, None)
                segments_added += entry["segments"]
            man.parts.append(part)
        man.deleted = tomb
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
        with _clear_write_errors(self.root, current.version):
            failpoint("commit.start")
            (self.root / MANIFESTS).mkdir(exist_ok=True)
            _write_atomic(_version_path(self.root, man.version), data, "commit.version_file")
            failpoint("commit.version_file")
            _write_atomic(self.root / MANIFEST, data, "commit.manifest")
        failpoint("commit.done")
        return man

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
            if _TMP_FILE.match(name):
                unlink(self.root / name)
        mdir = self.root / MANIFESTS
        versions: dict[int, Path] = {}
        foreign: list[str] = []
        if mdir.is_dir():
            for name in os.listdir(mdir):
                m = _VERSION_FILE.match(name)
                if m:
                    versions[int(m.group(1))] = mdir / name
                elif _TMP_FILE.match(name):
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
            referenced.update((p["segments"], p["tokens"]))
        pdir = self.root / PARTS
        candidates: list[str] = []  # part files the latest version does not use
        if pdir.is_dir():
            for name in sorted(os.listdir(pdir)):
                rel = f"{PARTS}/{name}"
                if _PART_FILE.match(name):
                    if rel not in referenced:
                        candidates.append(name)
                elif _TMP_FILE.match(name):
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
                    referenced.update((p["segments"], p["tokens"]))
            for name in candidates:
                if f"{PARTS}/{name}" not in referenced:
                    unlink(pdir / name)
        if foreign:
            logger.warning("%s: ignoring files that are not part of the index: %s", self.root,
                           ", ".join(sorted(foreign)))
        if removed:
            _fsync_dir(self.root)
            if pdir.is_dir():
                _fsync_dir(pdir)
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
        """Merge small parts and drop deleted rows into new parts, committed as one new version.

        A part is rewritten when its stored tokens are under half of ``target_part_bytes`` (small) or at
        least ``min_dead_fraction`` of its segments are deleted (with ``full``: every part with a deleted
        row, and all parts are merged). Rewritten parts are merged, in index order, into parts of about
        ``target_part_bytes``; segment ids are kept. Nothing is done when that would leave one small part
        unchanged. Then garbage collection keeps ``keep_versions`` versions. Needs the writer lock; readers
        keep searching the version they opened.
        """
        self._require_lock("compact")
        base = self.manifest()
        snap = Snapshot(self.root, base)
        bytes_before = sum(p.get("token_bytes", 0) for p in base.parts)
        chosen: list[int] = []
        for i, part in enumerate(base.parts):
            r0, r1 = snap.part_rows[i]
            n = r1 - r0
            dead = n - int(snap.live[r0:r1].sum())
            small = part.get("token_bytes", 0) * 2 < target_part_bytes
            if full or small or (n and dead / n >= min_dead_fraction) or (n and dead == n):
                chosen.append(i)
        has_dead = any(int((~snap.live[slice(*snap.part_rows[i])]).sum()) for i in chosen)
        if len(chosen) < 2 and not has_dead:
            removed = self.collect_garbage(keep_versions)
            return CompactReport(len(base.parts), len(base.parts), 0, 0, bytes_before, bytes_before, None,
                                 len(removed))
        chosen_set = set(chosen)
        new_parts: list[dict[str, Any]] = []
        writer: PartWriter | None = None
        written_bytes = 0
        dropped = 0
        try:
            with _clear_write_errors(self.root, base.version):
                chunks = [c for c in snap.chunks if c.part in chosen_set]
                for ch in tqdm(chunks, desc="compact", unit="batch", disable=not progress):
                    ok = snap.live[ch.rows]
                    dropped += int((~ok).sum())
                    if not ok.any():
                        continue
                    sel = np.flatnonzero(ok)
                    rows = snap.table.take(pa.array(ch.rows[sel]))
                    off = ch.offsets.numpy()
                    arr = _stored_bits(ch.tokens)
                    sc = None if ch.scales is None else ch.scales.numpy()
                    if sel.size == len(ok):
                        bits, scales = arr, sc
                    else:
                        bits = np.concatenate([arr[off[i] : off[i + 1]] for i in sel])
                        scales = (None if sc is None
                                  else np.concatenate([sc[off[i] : off[i + 1]] for i in sel]))
                    if writer is None:
                        writer = PartWriter(self.root, base.dim, base.dtype, base.version)
                        written_bytes = 0
                    writer.add_rows(rows, bits, scales)
                    written_bytes += bits.nbytes + (0 if scales is None else scales.nbytes)
                    failpoint("compact.batch")
                    if written_bytes >= target_part_bytes:
                        new_parts.append(writer.close())
                        writer = None
                if writer is not None:
                    new_parts.append(writer.close())
                    writer = None
        except BaseException:
            if writer is not None:
                writer.abort()
            for p in new_parts:  # closed but uncommitted: not referenced, remove now
                for key in ("segments", "tokens"):
                    with contextlib.suppress(OSError):
                        (self.root / p[key]).unlink()
            raise
        tomb = _tombstones_of_kept_parts(snap, base.deleted, [i for i in range(len(base.parts))
                                                                 if i not in chosen_set])
        man = self.commit(
            base,
            new_parts=new_parts,
            removed_parts=[base.parts[i]["id"] for i in chosen],
            deleted_ranges=merge_ranges(tomb),
            op="compact",
            info={"parts_rewritten": len(chosen), "parts_written": len(new_parts),
                  "segments_dropped": dropped},
        )
        removed = self.collect_garbage(keep_versions)
        return CompactReport(
            parts_before=len(base.parts),
            parts_after=len(man.parts),
            parts_rewritten=len(chosen),
            segments_dropped=dropped,
            bytes_before=bytes_before,
            bytes_after=sum(p.get("token_bytes", 0) for p in man.parts),
            version=man.version,
            files_removed=len(removed),
        )


__all__ = [
    "CompactReport", "EncoderMismatchError", "IndexError_", "IndexFormatError", "IndexNotFoundError",
    "IndexWriteError", "KEEP_VERSIONS", "LockedError", "Manifest", "PartWriter", "STORAGE_DTYPES",
    "SegmentRecord", "Snapshot", "Store", "VersionNotFoundError", "failpoint", "read_manifest",
    "storage_dtype",
]
