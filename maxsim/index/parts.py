"""Writing one part: a segment table and a token matrix, batch by batch, invisible until committed.
A part may also hold transcript cues (:meth:`PartWriter.add_cues`), written as one more file at close.

A :class:`PartWriter` buffers segments (:class:`SegmentRecord`), writes them as bounded Arrow record
batches, can take back the rows of a video that failed half way (:meth:`PartWriter.rollback`), and closes
into the entry :meth:`maxsim.index.store.Store.commit` publishes.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from maxsim.index import files
from maxsim.index.format import (
    BATCH_BYTES,
    DTYPES,
    NP_DTYPES,
    PARTS,
    ROW_COLUMNS,
    ROW_SCHEMA,
    SCALED,
    SEGMENT_SCHEMA,
    column_numpy,
    cue_schema,
    merge_ranges,
    ranges_from_ids,
    stored_bits,
)
from maxsim.index.integrity import ALGORITHM, ChecksumSink
from maxsim.kernels.quantize import quantize
from maxsim.types import encode_path


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
    token_grid: Sequence[int] | None = None  # [frames per step, rows, cols] (maxsim.types.TokenGrid)



@dataclass
class _Mark:
    n_ids: int
    n_buffered: int
    n_flushes: int
    n_cues: int
    # catalog entries as they were at the mark, saved the first time a video is touched after it (None: the
    # video was not in the part): O(videos touched since the mark), never a copy of the whole catalog
    undo: dict[str, dict[str, Any] | None]


class PartWriter:
    """Writes one part's segment table and token matrix, batch by batch, without committing them.

    It tracks the videos it holds (the part's catalog) and the ids of rows that were written but must not
    become live (see :meth:`rollback`). :meth:`close` returns the entry to pass to :meth:`Store.commit`.
    """

    def __init__(self, root: Path, dim: int, dtype: str, version: int | None = None,
                 cue_dim: int | None = None) -> None:
        self.root = root
        self.cue_dim = None if cue_dim is None else int(cue_dim)  # transcript vector size, when known
        self._cues: list[pa.Table] = []  # one table per add_cues / add_cue_rows, written at close
        self.dim = dim
        self.dtype = dtype
        self.version = version  # the committed version this part builds on (named in write errors)
        self.part_id = f"p{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        (root / PARTS).mkdir(parents=True, exist_ok=True)
        self.seg_path = root / PARTS / f"{self.part_id}.segments.arrow"
        self.tok_path = root / PARTS / f"{self.part_id}.tokens.arrow"
        self.cue_path = root / PARTS / f"{self.part_id}.cues.arrow"
        value_type, self._torch_dtype = DTYPES[dtype]
        self._scaled = SCALED.get(dtype)
        fields = [("tokens", pa.list_(value_type, dim))]
        if self._scaled:
            fields.append(("scale", pa.float32()))
        self._tok_schema = pa.schema(fields)
        self._files: list[Any] = []
        self._sums: list[ChecksumSink] = []  # CRC-32 of each record batch, as written
        self._sinks: list[Any] = []
        self._writers: list[Any] = []
        try:
            for path, schema in ((self.seg_path, SEGMENT_SCHEMA), (self.tok_path, self._tok_schema)):
                f = files.open_sink(path)
                self._files.append(f)
                self._sums.append(ChecksumSink(f))
                sink = pa.PythonFile(self._sums[-1], mode="w")
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
                "video": encode_path(rec.video),  # a name that is not UTF-8 kept losslessly
                "video_hash": rec.video_hash,
                "settings": rec.settings,
                "start": float(rec.start),
                "end": float(rec.end),
                "token_count": t.shape[0],
                "frame_times": [float(x) for x in rec.frame_times],
                "thumbnail": rec.thumbnail,
                "token_grid": None if rec.token_grid is None else [int(x) for x in rec.token_grid],
            }
        )
        self._toks.append(stored_bits(t))
        self._note(segment_id, rec.video, rec.video_hash, rec.settings, t.shape[0])
        self._buffered_tokens += t.shape[0]
        self._buffered_rows += 1
        files.failpoint("part.add")
        if self._buffered_tokens * self.dim * t.element_size() >= BATCH_BYTES:
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
        if self._buffered_tokens * self.dim * tokens.itemsize >= BATCH_BYTES:
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

    # -- transcript cues ------------------------------------------------------------------------------
    def add_cues(self, owner_id: int, video: str, starts: Sequence[float], ends: Sequence[float],
                 texts: Sequence[str], speakers: Sequence[str | None], vectors: Sequence[torch.Tensor]
                 ) -> None:
        """Buffer the transcript lines of ``video`` with their text-encoder vectors (one ``(n, cue_dim)``
        tensor per line), owned by ``owner_id``, a segment of that video added to this part (the cues
        live and die with it). The first call fixes the part's ``cue_dim`` when it had none."""
        entry = self.videos.get(video)
        if entry is None or not any(lo <= owner_id < hi for lo, hi in entry["ranges"]):
            raise ValueError(f"cues of {video!r}: segment {owner_id} is not in this part")
        n = len(texts)
        if not (len(starts) == len(ends) == len(speakers) == len(vectors) == n):
            raise ValueError(f"cues of {video!r}: starts, ends, texts, speakers and vectors differ in length")
        if n == 0:
            return
        rows = []
        for i, v in enumerate(vectors):
            v = v.detach().to("cpu", torch.float32)
            if self.cue_dim is None:
                self.cue_dim = int(v.shape[-1])
            if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] != self.cue_dim:
                raise ValueError(f"cue {i} of {video!r}: vectors of shape {tuple(v.shape)}; "
                                 f"expected (n >= 1, {self.cue_dim})")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"cue {i} of {video!r}: NaN or inf in its vectors")
            rows.append(v.to(torch.float16).numpy())
        schema = cue_schema(self.cue_dim)
        inner = pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(rows).reshape(-1), type=pa.float16()), self.cue_dim)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum([r.shape[0] for r in rows], out=offsets[1:])
        table = pa.table({
            "owner_id": pa.array(np.full(n, int(owner_id), dtype=np.int64)),
            "video": pa.array([encode_path(video)] * n, pa.string()),
            "start": pa.array([float(x) for x in starts], pa.float64()),
            "end": pa.array([float(x) for x in ends], pa.float64()),
            "text": pa.array([str(t) for t in texts], pa.string()),
            "speaker": pa.array([None if s is None else str(s) for s in speakers], pa.string()),
            "vectors": pa.ListArray.from_arrays(pa.array(offsets), inner),
        }, schema=schema)
        self._cues.append(table)

    def add_cue_rows(self, table: pa.Table) -> None:
        """Buffer stored cue rows (a cues file's columns) unchanged: used by compaction."""
        if table.num_rows:
            if self.cue_dim is None:
                self.cue_dim = int(table.schema.field("vectors").type.value_type.list_size)
            self._cues.append(table.cast(cue_schema(self.cue_dim)))

    def _write_cues(self) -> dict[str, Any]:
        table = pa.concat_tables(self._cues).combine_chunks()
        f = files.open_sink(self.cue_path)
        try:
            sums = ChecksumSink(f)
            sink = pa.PythonFile(sums, mode="w")
            with pa.ipc.new_file(sink, table.schema) as w:
                for batch in table.to_batches():
                    w.write_batch(batch)
                sums.mark()
            sums.mark()  # the footer
            sink.flush()
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        return {"cues": f"{PARTS}/{self.cue_path.name}", "n_cues": table.num_rows, "cue_sums": sums.ranges}

    # -- taking rows back ------------------------------------------------------------------------------
    def mark(self) -> _Mark:
        """A point to :meth:`rollback` to (e.g. before the segments of one video); only the latest mark can
        be rolled back to. Costs O(1): catalog entries are saved when first touched after it."""
        self._undo = {}
        return _Mark(len(self._ids), self._buffered_rows, self._batch, len(self._cues), self._undo)

    def rollback(self, mark: _Mark) -> None:
        """Take back every row added since ``mark`` (only :meth:`add` rows).

        Rows still buffered are dropped; rows already written to the files are recorded as dead, so the
        commit tombstones them: they never become live.
        """
        if mark.undo is not self._undo:
            raise RuntimeError("PartWriter.rollback: only the latest mark can be rolled back to")
        del self._cues[mark.n_cues :]
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
        with files.clear_write_errors(self.root, self.version):
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
            tables.append(r.select(ROW_COLUMNS).cast(ROW_SCHEMA))
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
                "token_grid": rows.column("token_grid"),
            },
            schema=SEGMENT_SCHEMA,
        )
        flat = np.concatenate(self._toks) if self._toks else np.zeros((0, self.dim), NP_DTYPES[self.dtype])
        values = pa.array(flat.reshape(-1), type=self._tok_schema.field(0).type.value_type)
        tok = pa.FixedSizeListArray.from_arrays(values, self.dim)
        cols = [tok]
        if self._scaled:
            cols.append(pa.array(np.concatenate(self._scales) if self._scales else np.zeros(0, np.float32),
                                 type=pa.float32()))
        self._writers[1].write_batch(pa.record_batch(cols, schema=self._tok_schema))
        self._sums[1].mark()  # token batch b is checksum range b
        for batch in seg.to_batches(max_chunksize=max(1, seg.num_rows)):
            self._writers[0].write_batch(batch)
        self._sums[0].mark()
        self.n_segments += rows.num_rows
        self.n_tokens += self._buffered_tokens
        self._rows, self._toks, self._scales, self._buffered_tokens, self._buffered_rows = [], [], [], 0, 0
        self._batch += 1
        files.failpoint("part.flush")

    def close(self) -> dict[str, Any]:
        """Finish both files (fsynced) and return the part's entry for :meth:`Store.commit`."""
        self.flush()
        cues: dict[str, Any] = {}
        with files.clear_write_errors(self.root, self.version):
            if self._cues:
                cues = self._write_cues()
            for w, sink, f, sums in zip(self._writers, self._sinks, self._files, self._sums, strict=True):
                w.close()
                sums.mark()  # the footer
                sink.flush()
                f.flush()
                os.fsync(f.fileno())
                sink.close()
                f.close()
            files.fsync_dir(self.root / PARTS)
        self.closed = True
        files.failpoint("part.close")
        entry = {
            "id": self.part_id,
            "segments": f"{PARTS}/{self.seg_path.name}",
            "tokens": f"{PARTS}/{self.tok_path.name}",
            "n_segments": self.n_segments,
            "n_tokens": self.n_tokens,
            "token_bytes": self.n_tokens * (self.dim * np.dtype(NP_DTYPES[self.dtype]).itemsize
                                            + (4 if self._scaled else 0)),
            "min_id": 0 if self._min_id is None else self._min_id,
            "max_id": -1 if self._max_id is None else self._max_id,
            "checksums": {"algorithm": ALGORITHM, "segments": self._sums[0].ranges,
                          "tokens": self._sums[1].ranges},
            "videos": self.videos,
            "dead": self.dead,
        }
        if cues:
            entry["cues"], entry["n_cues"] = cues["cues"], cues["n_cues"]
            entry["checksums"]["cues"] = cues["cue_sums"]
        return entry

    def abort(self) -> None:
        """Drop the part's files."""
        for obj in (*self._writers, *self._sinks, *self._files):
            with contextlib.suppress(Exception):
                obj.close()
        for p in (self.seg_path, self.tok_path, self.cue_path):
            with contextlib.suppress(OSError):
                p.unlink()




def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
