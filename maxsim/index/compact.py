"""Compaction: merge small parts and drop deleted segments into new parts, committed as one new version."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from maxsim.index.cues import read_cue_part
from maxsim.index.files import clear_write_errors, failpoint
from maxsim.index.format import (
    KEEP_VERSIONS,
    TARGET_PART_BYTES,
    column_numpy,
    in_ranges,
    merge_ranges,
    part_file_keys,
    stored_bits,
)
from maxsim.index.parts import PartWriter
from maxsim.index.snapshot import Snapshot, tombstones_of_kept_parts


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


def compact(
    store: Any,
    target_part_bytes: int = TARGET_PART_BYTES,
    min_dead_fraction: float = 0.1,
    full: bool = False,
    keep_versions: int = KEEP_VERSIONS,
    progress: bool = False,
) -> CompactReport:
    """Merge small parts of ``store`` (a :class:`~maxsim.index.store.Store` holding the writer lock) and
    drop deleted rows into new parts, committed as one new version.

    A part is rewritten when its stored tokens are under half of ``target_part_bytes`` (small) or at
    least ``min_dead_fraction`` of its segments are deleted (with ``full``: every part with a deleted
    row, and all parts are merged). Rewritten parts are merged, in index order, into parts of about
    ``target_part_bytes``; segment ids are kept. Nothing is done when that would leave one small part
    unchanged (unless ``full`` and it was written without checksums: it is rewritten to get them). Then
    garbage collection keeps ``keep_versions`` versions. Needs the writer lock; readers keep searching the
    version they opened.
    """
    base = store.manifest()
    snap = Snapshot(store.root, base)
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
    # a full compaction also rewrites a lone part written before checksums, so that it gets them
    unsummed = full and any("checksums" not in base.parts[i] for i in chosen)
    if len(chosen) < 2 and not has_dead and not unsummed:
        removed = store.collect_garbage(keep_versions)
        return CompactReport(len(base.parts), len(base.parts), 0, 0, bytes_before, bytes_before, None,
                             len(removed))
    chosen_set = set(chosen)
    # the live transcript cues of the rewritten parts go into the first new part (their owners keep ids)
    cue_rows = []
    for i in chosen:
        if base.parts[i].get("cues"):
            t = read_cue_part(store.root, base.parts[i], base.version)
            cue_rows.append(t.filter(pa.array(~in_ranges(column_numpy(t, "owner_id"), base.deleted))))
    new_parts: list[dict[str, Any]] = []
    writer: PartWriter | None = None
    written_bytes = 0
    dropped = 0
    try:
        with clear_write_errors(store.root, base.version):
            chunks = [(c, ch) for c, ch in enumerate(snap.chunks) if ch.part in chosen_set]
            for c, ch in tqdm(chunks, desc="compact", unit="batch", disable=not progress):
                ok = snap.live[ch.rows]
                dropped += int((~ok).sum())
                if not ok.any():
                    continue
                snap.verify_chunks([c])  # never copy damaged bytes into a part with fresh checksums
                sel = np.flatnonzero(ok)
                rows = snap.table.take(pa.array(ch.rows[sel]))
                off = ch.offsets.numpy()
                arr = stored_bits(ch.tokens)
                sc = None if ch.scales is None else ch.scales.numpy()
                if sel.size == len(ok):
                    bits, scales = arr, sc
                else:
                    bits = np.concatenate([arr[off[i] : off[i + 1]] for i in sel])
                    scales = (None if sc is None
                              else np.concatenate([sc[off[i] : off[i + 1]] for i in sel]))
                if writer is None:
                    writer = PartWriter(store.root, base.dim, base.dtype, base.version)
                    written_bytes = 0
                    for t in cue_rows:
                        writer.add_cue_rows(t)
                    cue_rows = []
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
            for key in part_file_keys(p):
                with contextlib.suppress(OSError):
                    (store.root / p[key]).unlink()
        raise
    tomb = tombstones_of_kept_parts(snap, base.deleted, [i for i in range(len(base.parts))
                                                             if i not in chosen_set])
    man = store.commit(
        base,
        new_parts=new_parts,
        removed_parts=[base.parts[i]["id"] for i in chosen],
        deleted_ranges=merge_ranges(tomb),
        op="compact",
        info={"parts_rewritten": len(chosen), "parts_written": len(new_parts),
              "segments_dropped": dropped},
        keep_versions=keep_versions,
    )
    removed = store.collect_garbage(keep_versions)
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
