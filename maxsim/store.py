"""The index on disk: Arrow IPC files, memory-mapped on open, ragged, committed atomically.

An index folder holds

- ``manifest.json``: the committed state (format version, index version, encoder, dim, storage dtype,
  the list of parts, the ids of deleted segments, and the history of commits). A commit writes every
  new file first, then replaces the manifest with ``os.replace``: readers see the old or the new
  version, never a half-written one.
- ``parts/<part>.segments.arrow``: one row per segment (id, video path, video content hash, settings key,
  start, end, token offset, token count, frame timestamps, thumbnail JPEG).
- ``parts/<part>.tokens.arrow``: the segments' token vectors as one flat ``(total_tokens, dim)`` matrix,
  addressed by the offsets of the segment rows (never padded). It is written in record batches so that
  ingest keeps only a bounded window in memory; a segment never straddles two batches.
- ``LOCK``: held (``flock``) by the one writer; the OS releases it when the writer dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTS = "parts"
LOCK = "LOCK"

# Storage dtypes for token vectors: name -> (arrow value type, torch dtype of the stored bits).
_DTYPES: dict[str, tuple[pa.DataType, torch.dtype]] = {
    "float16": (pa.float16(), torch.float16),
    "bfloat16": (pa.uint16(), torch.bfloat16),  # Arrow has no bf16: raw bits, viewed as bf16
    "float32": (pa.float32(), torch.float32),
}

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

_BATCH_BYTES = 128 << 20  # token bytes buffered before a record batch is written


class IndexError_(Exception):
    """Base class of index errors (named to avoid shadowing the builtin IndexError)."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """No index exists at the given path."""


class IndexFormatError(IndexError_):
    """The index folder is damaged, foreign or written by a newer format."""


class EncoderMismatchError(IndexError_):
    """The index was built with another encoder than the one given."""


class LockedError(IndexError_):
    """Another process is writing to the index."""


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
    """The committed state of an index."""

    encoder: dict[str, Any]
    dim: int
    dtype: str = "float16"
    version: int = 0
    format_version: int = FORMAT_VERSION
    next_segment_id: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=1)

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
            raise IndexFormatError(
                f"{path}: written by a newer maxsim (format {fv}; this version reads up to "
                f"{FORMAT_VERSION}): upgrade maxsim to open it"
            )
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise IndexFormatError(f"{path}: manifest is missing fields ({e})") from e


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_manifest(root: str | Path) -> Manifest:
    """The committed manifest of the index at ``root``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        if not root.exists():
            raise IndexNotFoundError(f"no index at {root} (the folder does not exist)")
        raise IndexNotFoundError(f"no index at {root} ({MANIFEST} is missing)")
    return Manifest.from_json(path.read_text(), path)


class PartWriter:
    """Writes one part's segment table and token matrix, batch by batch, without committing them."""

    def __init__(self, root: Path, dim: int, dtype: str) -> None:
        self.root = root
        self.dim = dim
        self.dtype = dtype
        self.part_id = f"p{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:12]}"
        (root / PARTS).mkdir(parents=True, exist_ok=True)
        self.seg_path = root / PARTS / f"{self.part_id}.segments.arrow"
        self.tok_path = root / PARTS / f"{self.part_id}.tokens.arrow"
        value_type, self._torch_dtype = _DTYPES[dtype]
        self._tok_schema = pa.schema([("tokens", pa.list_(value_type, dim))])
        self._seg_sink = pa.OSFile(str(self.seg_path), "wb")
        self._tok_sink = pa.OSFile(str(self.tok_path), "wb")
        self._seg_writer = pa.ipc.new_file(self._seg_sink, SEGMENT_SCHEMA)
        self._tok_writer = pa.ipc.new_file(self._tok_sink, self._tok_schema)
        self._rows: list[dict[str, Any]] = []
        self._toks: list[np.ndarray] = []
        self._buffered_tokens = 0
        self._batch = 0
        self.n_segments = 0
        self.n_tokens = 0

    def add(self, segment_id: int, rec: SegmentRecord) -> None:
        """Buffer one segment; flushes a record batch when the buffer is large."""
        t = rec.tokens.detach().to("cpu", self._torch_dtype).contiguous()
        bits = t.view(torch.uint16) if self.dtype == "bfloat16" else t
        self._rows.append(
            {
                "segment_id": segment_id,
                "video": rec.video,
                "video_hash": rec.video_hash,
                "settings": rec.settings,
                "start": float(rec.start),
                "end": float(rec.end),
                "token_batch": self._batch,
                "token_offset": self._buffered_tokens,
                "token_count": t.shape[0],
                "frame_times": [float(x) for x in rec.frame_times],
                "thumbnail": rec.thumbnail,
            }
        )
        self._toks.append(bits.numpy())
        self._buffered_tokens += t.shape[0]
        if self._buffered_tokens * self.dim * t.element_size() >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered segments as one record batch of each file."""
        if not self._rows:
            return
        flat = np.concatenate(self._toks) if self._toks else np.zeros((0, self.dim))
        values = pa.array(flat.reshape(-1), type=self._tok_schema.field(0).type.value_type)
        tok = pa.FixedSizeListArray.from_arrays(values, self.dim)
        self._tok_writer.write_batch(pa.record_batch([tok], schema=self._tok_schema))
        self._seg_writer.write_batch(pa.RecordBatch.from_pylist(self._rows, schema=SEGMENT_SCHEMA))
        self.n_segments += len(self._rows)
        self.n_tokens += self._buffered_tokens
        self._rows, self._toks, self._buffered_tokens = [], [], 0
        self._batch += 1

    def close(self) -> dict[str, Any]:
        """Finish both files (fsynced) and return the part's manifest entry."""
        self.flush()
        for w, sink in ((self._seg_writer, self._seg_sink), (self._tok_writer, self._tok_sink)):
            w.close()
            sink.flush()
            os.fsync(sink.fileno())
            sink.close()
        return {
            "id": self.part_id,
            "segments": f"{PARTS}/{self.seg_path.name}",
            "tokens": f"{PARTS}/{self.tok_path.name}",
            "n_segments": self.n_segments,
            "n_tokens": self.n_tokens,
        }

    def abort(self) -> None:
        """Drop the part's files."""
        for w, sink in ((self._seg_writer, self._seg_sink), (self._tok_writer, self._tok_sink)):
            with contextlib.suppress(Exception):
                w.close()
            with contextlib.suppress(Exception):
                sink.close()
        for p in (self.seg_path, self.tok_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


@dataclass
class Chunk:
    """A contiguous run of segments of one part whose tokens are one memory-mapped matrix."""

    tokens: torch.Tensor  # (n_tokens, dim), read-only view of the mapped file
    offsets: torch.Tensor  # (n_segments + 1,) int64
    rows: np.ndarray  # row numbers of these segments in the snapshot's segment table


class Snapshot:
    """A read-only view of one committed version: segment metadata and memory-mapped tokens."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self.chunks: list[Chunk] = []
        tables = []
        row0 = 0
        for part in manifest.parts:
            seg = _open_ipc(root / part["segments"]).read_all()
            tok_reader = _open_ipc(root / part["tokens"])
            batch_ids = seg.column("token_batch").to_numpy()
            counts = seg.column("token_count").to_numpy().astype(np.int64)
            for b in range(tok_reader.num_record_batches):
                sel = np.flatnonzero(batch_ids == b)
                if sel.size == 0:
                    continue
                tokens = self._tokens(tok_reader.get_batch(b), root / part["tokens"])
                offsets = np.zeros(sel.size + 1, dtype=np.int64)
                np.cumsum(counts[sel], out=offsets[1:])
                if offsets[-1] != tokens.shape[0]:
                    raise IndexFormatError(
                        f"{root / part['tokens']}: batch {b} has {tokens.shape[0]} token rows but its "
                        f"segments claim {offsets[-1]}"
                    )
                self.chunks.append(Chunk(tokens, torch.from_numpy(offsets), sel + row0))
            tables.append(seg)
            row0 += seg.num_rows
        self.table = (
            pa.concat_tables(tables) if tables else SEGMENT_SCHEMA.empty_table()
        ).combine_chunks()
        self.segment_ids = self.table.column("segment_id").to_numpy()
        # where each table row's tokens live: chunk number and position inside the chunk
        self._row_chunk = np.full(self.table.num_rows, -1, dtype=np.int64)
        self._row_local = np.zeros(self.table.num_rows, dtype=np.int64)
        for c, ch in enumerate(self.chunks):
            self._row_chunk[ch.rows] = c
            self._row_local[ch.rows] = np.arange(ch.rows.size)
        deleted = np.asarray(manifest.deleted, dtype=np.int64)
        self.live = ~np.isin(self.segment_ids, deleted)

    def _tokens(self, batch: pa.RecordBatch, path: Path) -> torch.Tensor:
        col = batch.column(0)
        dim = self.manifest.dim
        if col.type.list_size != dim:
            raise IndexFormatError(f"{path}: token dim {col.type.list_size}, manifest says {dim}")
        values = col.values
        np_dtype = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[self.manifest.dtype]
        width = np.dtype(np_dtype).itemsize
        start = (values.offset + col.offset * dim) * width
        arr = np.frombuffer(values.buffers()[1], dtype=np_dtype, count=len(col) * dim, offset=start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory map: never written
            t = torch.from_numpy(arr.reshape(-1, dim))
        return t.view(torch.bfloat16) if self.manifest.dtype == "bfloat16" else t

    def __len__(self) -> int:
        return int(self.live.sum())

    def segment_tokens(self, row: int) -> torch.Tensor:
        """Token vectors of the segment in table row ``row``."""
        ch = self.chunks[int(self._row_chunk[row])]
        i = int(self._row_local[row])
        return ch.tokens[int(ch.offsets[i]) : int(ch.offsets[i + 1])]


def _open_ipc(path: Path) -> pa.ipc.RecordBatchFileReader:
    """Open an Arrow IPC file memory-mapped (no copy of its buffers)."""
    if not path.is_file():
        raise IndexFormatError(f"{path}: listed in the manifest but missing from the index folder")
    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except pa.ArrowInvalid as e:
        raise IndexFormatError(f"{path}: not a readable Arrow IPC file ({e})") from e


class Store:
    """An index folder: open or create it, read snapshots, commit new parts and deletions."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def create(cls, root: str | Path, encoder: dict[str, Any], dim: int, dtype: str = "float16") -> Store:
        """Create an empty index (version 0) at ``root``; the folder may exist but must hold no index."""
        if dtype not in _DTYPES:
            raise ValueError(f"unknown storage dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        store = cls(root)
        store.root.mkdir(parents=True, exist_ok=True)
        if (store.root / MANIFEST).exists():
            raise FileExistsError(f"an index already exists at {store.root}")
        with store.writing():
            man = Manifest(encoder=encoder, dim=int(dim), dtype=dtype)
            man.history.append({"version": 0, "time": time.time(), "op": "create"})
            _write_atomic(store.root / MANIFEST, man.to_json().encode())
        return store

    def manifest(self) -> Manifest:
        return read_manifest(self.root)

    def snapshot(self) -> Snapshot:
        """A consistent read-only view of the latest committed version."""
        return Snapshot(self.root, self.manifest())

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock; a second writer gets :class:`LockedError` at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise LockedError(f"{self.root}: another process is writing to this index") from e
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def new_part(self) -> PartWriter:
        man = self.manifest()
        return PartWriter(self.root, man.dim, man.dtype)

    def commit(
        self,
        base: Manifest,
        new_parts: Sequence[dict[str, Any]] = (),
        deleted: Sequence[int] = (),
        next_segment_id: int | None = None,
        op: str = "ingest",
        info: dict[str, Any] | None = None,
    ) -> Manifest:
        """Atomically publish ``base`` plus new parts and deletions as the next version."""
        current = self.manifest()
        if current.version != base.version:
            raise IndexFormatError(
                f"{self.root}: the index moved from version {base.version} to {current.version} "
                "during this write"
            )
        man = Manifest(**json.loads(current.to_json()))
        man.version += 1
        man.parts.extend(new_parts)
        man.deleted = sorted(set(man.deleted).union(int(i) for i in deleted))
        if next_segment_id is not None:
            man.next_segment_id = next_segment_id
        entry = {
            "version": man.version,
            "time": time.time(),
            "op": op,
            "segments_added": sum(p["n_segments"] for p in new_parts),
            "segments_deleted": len(deleted),
        }
        entry.update(info or {})
        man.history.append(entry)
        _write_atomic(self.root / MANIFEST, man.to_json().encode())
        return man
