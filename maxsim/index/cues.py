"""Reading the transcript cues of a version: every part's ``cues`` file, checked against its checksums,
as one table with the cues' vectors as one flat matrix.

A cue is live while the segment it is owned by (``owner_id``, a segment of the same video in the same
part) is live: deleting or replacing a video tombstones its segments and so its cues; compaction copies
only live cues. Cue files are small (a few hundred bytes a line plus its vectors), so they are read whole
and checked completely when a version's cues are first used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from maxsim.errors import IndexFormatError
from maxsim.index.files import map_file, open_ipc
from maxsim.index.format import column_numpy, cue_schema, in_ranges
from maxsim.index.integrity import FileCheck
from maxsim.index.manifest import Manifest
from maxsim.types import decode_path


@dataclass
class Cues:
    """The cues of a version: ``table`` (columns of :func:`~maxsim.index.format.cue_schema` but the
    vectors), their ``vectors`` ``(total rows, dim)`` float16 and ``offsets`` (cue ``i`` has rows
    ``offsets[i]:offsets[i+1]``), ``live`` (owner segment not deleted), ``starts``, ``ends``, ``owners``
    (numpy)."""

    table: pa.Table
    vectors: torch.Tensor
    offsets: np.ndarray
    live: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    owners: np.ndarray
    dim: int

    def __len__(self) -> int:
        return self.table.num_rows

    def video(self, i: int) -> str:
        return decode_path(self.table.column("video")[i].as_py())

    def text(self, i: int) -> str:
        return self.table.column("text")[i].as_py()

    def speaker(self, i: int) -> str | None:
        return self.table.column("speaker")[i].as_py()


def read_cue_part(root: Path, part: dict[str, Any], version: int | None = None) -> pa.Table:
    """One part's cue table, every byte checked against its checksums when it has them."""
    path = root / part["cues"]
    mapped = map_file(path, version)
    sums = (part.get("checksums") or {}).get("cues")
    if sums:
        FileCheck(path, mapped, sums, root).verify_all()
    table = open_ipc(path, version, mapped).read_all()
    if table.schema.names != cue_schema(1).names:
        raise IndexFormatError(f"{path}: unexpected columns {table.schema.names}")
    if table.num_rows != part.get("n_cues", table.num_rows):
        raise IndexFormatError(f"{path}: {table.num_rows} cues, the manifest says {part['n_cues']}")
    return table


def load_cues(root: Path, manifest: Manifest, previous: dict[str, pa.Table] | None = None
              ) -> tuple[Cues | None, dict[str, pa.Table]]:
    """The cues of ``manifest``'s version (None when it has none) and the cue tables read per part id
    (pass them as ``previous`` to a later call to reuse the parts both versions share)."""
    previous = previous or {}
    tables: dict[str, pa.Table] = {}
    for part in manifest.parts:
        if part.get("cues"):
            pid = part["id"]
            tables[pid] = previous.get(pid) or read_cue_part(root, part, manifest.version)
    if not tables:
        return None, tables
    dim = int((manifest.transcript or {}).get("dim") or 0)
    table = pa.concat_tables(list(tables.values())).combine_chunks()
    if dim and table.schema.field("vectors").type.value_type.list_size != dim:
        raise IndexFormatError(f"{root}: cue vectors of dim "
                               f"{table.schema.field('vectors').type.value_type.list_size}, "
                               f"the manifest says {dim}")
    dim = int(table.schema.field("vectors").type.value_type.list_size)
    col = table.column("vectors")
    lists = col.chunk(0) if col.num_chunks else pa.array([], col.type)
    raw_off = np.asarray(lists.offsets, dtype=np.int64)
    offsets = raw_off - raw_off[0]
    flat = lists.values.slice(int(raw_off[0]), int(raw_off[-1] - raw_off[0]))
    values = flat.values.slice(flat.offset * dim, len(flat) * dim)
    arr = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float16).reshape(-1, dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        vectors = torch.from_numpy(arr)
    owners = column_numpy(table, "owner_id")
    cues = Cues(table.drop_columns(["vectors"]), vectors, offsets, ~in_ranges(owners, manifest.deleted),
                column_numpy(table, "start"), column_numpy(table, "end"), owners, dim)
    return cues, tables
