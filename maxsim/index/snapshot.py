"""Reading one committed version: segment metadata and memory-mapped tokens (:class:`Snapshot`).

Opening maps the part files; only the small numeric columns (ids, times) are copied into memory (about 40
bytes per segment). Parts are immutable, so a snapshot opened with an older one as ``previous`` reuses the
mappings of the parts both share. A snapshot never changes the manifest it is given.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from maxsim.errors import IndexFormatError
from maxsim.index.cues import Cues, load_cues
from maxsim.index.files import map_file, open_ipc
from maxsim.index.format import (
    DTYPES,
    LEGACY_SEGMENT_NAMES,
    NP_DTYPES,
    SCALED,
    SEGMENT_SCHEMA,
    column_numpy,
    in_ranges,
    merge_ranges,
)
from maxsim.index.integrity import FileCheck
from maxsim.index.manifest import Manifest, with_catalog
from maxsim.types import decode_path


@dataclass
class Chunk:
    """A contiguous run of segments of one part whose tokens are one memory-mapped matrix."""

    tokens: torch.Tensor  # (n_tokens, dim), read-only view of the mapped file (in the storage dtype)
    offsets: torch.Tensor  # (n_segments + 1,) int64
    rows: np.ndarray  # row numbers of these segments in the snapshot's segment table
    part: int = 0  # index of the part in the manifest
    # int8 / fp8 indexes: float32 (n_tokens,) dequantisation scales, mapped (pass as d_scale); else None
    scales: torch.Tensor | None = None
    # the checksums of its part's tokens file and its range there (None: a part written without them)
    check: tuple[FileCheck, int] | None = None


# a part as mapped: its segment table, and per token batch (tokens, offsets, rows local to the part, scales,
# checksum range)
_Batch = tuple[torch.Tensor, torch.Tensor, np.ndarray, "torch.Tensor | None", "tuple[FileCheck, int] | None"]
_LoadedPart = tuple[pa.Table, list[_Batch]]


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
            for tokens, offsets, sel, scales, check in batches:
                self.chunks.append(Chunk(tokens, offsets, sel + row0, p_i, scales, check))
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
        # an index written before the catalog gets one built from the tables (the manifest given is unchanged)
        self.manifest = with_catalog(manifest, self.table, self.live)
        # chunks whose token bytes were not checked against their checksums yet (see verify_rows)
        self._unverified = {c for c, ch in enumerate(self.chunks)
                            if ch.check is not None and not ch.check[0].verified}
        self._verify_lock = threading.Lock()
        # transcript cues, read on first use (see cues()); the cue tables of ``previous`` are reused
        self._cue_tables = previous._cue_tables if previous is not None and previous.root == root else {}
        self._cues: tuple[Cues | None] | None = None

    def _load_part(self, part: dict[str, Any]) -> _LoadedPart:
        """Map a part's files. With checksums: the sizes of both files, the whole segment table and the
        tokens file's footer are checked now; each token batch when first used (:meth:`verify_rows`)."""
        root, manifest = self.root, self.manifest
        seg_path, tok_path = root / part["segments"], root / part["tokens"]
        sums = part.get("checksums")
        seg_map = map_file(seg_path, manifest.version)
        if sums:
            FileCheck(seg_path, seg_map, sums["segments"], root).verify_all()
        seg = open_ipc(seg_path, manifest.version, seg_map).read_all()
        if seg.schema.names == LEGACY_SEGMENT_NAMES:  # written before token grids: none known
            seg = seg.append_column(SEGMENT_SCHEMA.field("token_grid"),
                                    pa.nulls(seg.num_rows, SEGMENT_SCHEMA.field("token_grid").type))
        if seg.schema.names != SEGMENT_SCHEMA.names:
            raise IndexFormatError(f"{seg_path}: unexpected columns {seg.schema.names}")
        if seg.num_rows != part["n_segments"]:
            raise IndexFormatError(
                f"{seg_path}: {seg.num_rows} segments, the manifest says {part['n_segments']}"
            )
        tok_map, tok_check = map_file(tok_path, manifest.version), None
        if sums:
            tok_check = FileCheck(tok_path, tok_map, sums["tokens"], root)
            tok_check.verify(len(tok_check.ranges) - 1)  # the footer: Arrow reads it to open the file
        tok_reader = open_ipc(tok_path, manifest.version, tok_map)
        if tok_check is not None and len(tok_check.ranges) != tok_reader.num_record_batches + 1:
            raise IndexFormatError(f"{tok_path}: {tok_reader.num_record_batches} record batches, but its "
                                   f"checksums cover {len(tok_check.ranges) - 1}")
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
            batches.append((tokens, torch.from_numpy(offsets), sel, scales,
                            None if tok_check is None else (tok_check, b)))
        return seg, batches

    def _tokens(self, batch: pa.RecordBatch, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A record batch's token matrix (and float32 scales for quantised dtypes), zero-copy views."""
        scaled = self.manifest.dtype in SCALED
        if batch.num_columns != (2 if scaled else 1):
            raise IndexFormatError(
                f"{path}: columns {batch.schema.names}, manifest says {self.manifest.dtype}"
            )
        col = batch.column(0)
        dim = self.manifest.dim
        if col.type.list_size != dim:
            raise IndexFormatError(f"{path}: token dim {col.type.list_size}, manifest says {dim}")
        values = col.values
        np_dtype = NP_DTYPES[self.manifest.dtype]
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
            t = t.view(DTYPES[self.manifest.dtype][1])
        return t, scales

    def cues(self) -> Cues | None:
        """The transcript cues of this version (:class:`~maxsim.index.cues.Cues`), read and checked on
        first use; None when the version has none."""
        with self._verify_lock:
            if self._cues is None:
                cues, self._cue_tables = load_cues(self.root, self.manifest, self._cue_tables)
                self._cues = (cues,)
            return self._cues[0]

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def catalog(self) -> dict[str, dict[str, Any]]:
        """video path -> catalog entry (hash, settings, id ranges, counts) of this version."""
        return self.manifest.videos or {}

    def reuses(self, part_id: str) -> bool:
        """Whether part ``part_id`` is mapped in this snapshot (so a later one opened with it as
        ``previous`` shares the mapping)."""
        return part_id in self._parts

    def with_parts(self, part_ids: Sequence[str]) -> Snapshot:
        """A snapshot of the same version restricted to some of its parts (mapped already, not again),
        e.g. a shard of it; its table rows are renumbered from 0 in part order."""
        wanted = set(part_ids)
        man = self.manifest.copy()
        man.parts = [p for p in self.manifest.parts if p["id"] in wanted]
        return Snapshot(self.root, man, self)

    def part_row_span(self, part_id: str) -> tuple[int, int]:
        """The table rows ``[lo, hi)`` of part ``part_id``."""
        for p, span in zip(self.manifest.parts, self.part_rows, strict=True):
            if p["id"] == part_id:
                return span
        raise KeyError(f"part {part_id!r} is not in version {self.version} of {self.root}")

    def __len__(self) -> int:
        return int(self.live.sum())

    def video(self, row: int) -> str:
        """The path of the video of table row ``row``."""
        return decode_path(self.table.column("video")[row].as_py())

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

    def verify_chunks(self, chunks: Iterable[int] | None = None) -> None:
        """Check the token bytes of these chunks (indices into :attr:`chunks`; None: all) against the
        checksums written at commit, each at most once per process: :class:`IndexFormatError` naming the
        file when they differ. Chunks of parts written without checksums pass unchecked."""
        with self._verify_lock:
            todo = sorted(self._unverified if chunks is None else self._unverified.intersection(chunks))
        checks = [self.chunks[c].check for c in todo]
        work = [c for c in checks if c is not None]
        if len(work) > 1:  # CRC-32 releases the GIL: batches are checked on every core
            with ThreadPoolExecutor(min(len(work), os.cpu_count() or 1, 16)) as pool:
                list(pool.map(lambda c: c[0].verify(c[1]), work))  # each range once per process
        elif work:
            work[0][0].verify(work[0][1])
        with self._verify_lock:
            self._unverified.difference_update(todo)

    def verify_rows(self, rows: np.ndarray) -> None:
        """:meth:`verify_chunks` for the chunks holding these table rows (what a search scores). Once
        everything used was checked this costs a set lookup, or a min and max over ``rows``."""
        if not self._unverified or len(rows) == 0:
            return
        cs = self.row_chunk[np.asarray(rows, dtype=np.int64)]
        lo, hi = int(cs.min()), int(cs.max())
        with self._verify_lock:
            pending = [c for c in self._unverified if lo <= c <= hi]
        if pending:
            self.verify_chunks([lo] if lo == hi else np.unique(cs).tolist())

    @property
    def verified(self) -> bool:
        """Whether every token batch with checksums was checked (or none has any)."""
        return not self._unverified

    def segment_data(self, row: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stored token matrix of the segment in table row ``row`` and its scales (None unless int8 /
        fp8): zero-copy views of the mapped file, checked against its checksum first."""
        c = int(self.row_chunk[row])
        if self._unverified:
            self.verify_chunks([c])
        ch = self.chunks[c]
        i = int(self.row_local[row])
        lo, hi = int(ch.offsets[i]), int(ch.offsets[i + 1])
        return ch.tokens[lo:hi], None if ch.scales is None else ch.scales[lo:hi]


def tombstones_of_kept_parts(snap: Snapshot, deleted: Sequence[Sequence[int]], kept: Sequence[int]
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
