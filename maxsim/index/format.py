"""The index's on-disk format: folder and file names, storage dtypes, the segment table's schema, and the
half-open id ranges the manifest uses for segment ids (catalog entries, tombstones).

See :mod:`maxsim.index` for the layout of an index folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from maxsim.errors import IndexFormatError

# 2: video catalog, deleted id ranges, manifests/ (format 1 is read and upgraded); 3: segment tables may
# hold a token_grid column (parts of format 2 are read with none), so a maxsim of format 2 refuses it
# with "upgrade maxsim" rather than failing on the new column; 4: transcript cues per part (a part's
# optional ``cues`` file and the manifest's ``transcript`` recipe; formats 2 and 3 are read as they are)
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
MANIFESTS = "manifests"
PARTS = "parts"
LOCK = "LOCK"
KEEP_VERSIONS = 8  # versions whose files garbage collection keeps by default (the latest included)
CREATE_WAIT_S = 10.0  # creating an index waits at least this long for a concurrent creator's lock
TARGET_PART_BYTES = 512 << 20  # token bytes a compacted part grows to before a new one starts

PART_FILE = re.compile(r"^(p[0-9]{14}-[0-9a-f]{12})\.(segments|tokens|cues)\.arrow$")
VERSION_FILE = re.compile(r"^v([0-9]{9})\.json$")
TMP_FILE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")

# Storage dtypes for token vectors: name -> (arrow value type, torch dtype of the stored bits).
DTYPES: dict[str, tuple[pa.DataType, torch.dtype]] = {
    "float16": (pa.float16(), torch.float16),
    "bfloat16": (pa.uint16(), torch.bfloat16),  # Arrow has no bf16: raw bits, viewed as bf16
    "float32": (pa.float32(), torch.float32),
    "int8": (pa.int8(), torch.int8),  # + a float32 scale per token row
    "float8_e4m3fn": (pa.uint8(), torch.float8_e4m3fn),  # Arrow has no fp8: raw bits; + a scale per row
}
NP_DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "int8": np.int8,
              "float8_e4m3fn": np.uint8}
# Quantised dtypes: their name in maxsim.kernels.quantize. Stored with one float32 scale per token row
# (the tokens file's ``scale`` column); a score uses ``data * scale``.
SCALED = {"int8": "int8", "float8_e4m3fn": "fp8"}
STORAGE_DTYPES = tuple(DTYPES)
DTYPE_ALIASES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp8": "float8_e4m3fn",
                  "float8": "float8_e4m3fn", "e4m3": "float8_e4m3fn"}


def storage_dtype(name: str) -> str:
    """The canonical name of a storage dtype (aliases fp16, bf16, fp32, fp8 accepted)."""
    name = DTYPE_ALIASES.get(str(name), str(name))
    if name not in DTYPES:
        raise ValueError(
            f"unknown storage dtype {name!r}; expected one of {', '.join(STORAGE_DTYPES)} "
            f"(or {', '.join(DTYPE_ALIASES)})"
        )
    return name


def stored_bits(t: torch.Tensor) -> np.ndarray:
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
        # [frames per step, rows, cols] of the segment's tokens (maxsim.types.TokenGrid); null when the
        # encoder did not say (pooled tokens). Parts written before it existed lack the column (LEGACY_NAMES).
        ("token_grid", pa.list_(pa.int32())),
    ]
)
# the columns of segment tables written before token grids were recorded (read with a null token_grid)
LEGACY_SEGMENT_NAMES = SEGMENT_SCHEMA.names[:-1]

# facts about a video's file a catalog entry may hold (besides hash, settings, ranges, segments, tokens);
# ``subtitles``: the fingerprint of its sidecar subtitle files when it was ingested with transcripts
FILE_FACTS = ("size", "mtime_ns", "subtitles")


def cue_schema(dim: int) -> pa.Schema:
    """The schema of a part's ``cues`` file: one row per transcript line of a video, with its text-encoder
    vectors (ragged: one row per token, or one pooled row). ``owner_id`` is the id of one segment of the
    same video in the same part: the cue is live exactly while that segment is (deleting or replacing the
    video tombstones it), so cues need no tombstones of their own."""
    return pa.schema([
        ("owner_id", pa.int64()),
        ("video", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("speaker", pa.string()),
        ("vectors", pa.list_(pa.list_(pa.float16(), int(dim)))),
    ])


def part_file_keys(part: dict) -> tuple[str, ...]:
    """The keys of a part entry that name its files: ``segments``, ``tokens`` and, when it holds
    transcript cues, ``cues``."""
    return ("segments", "tokens", "cues") if part.get("cues") else ("segments", "tokens")

BATCH_BYTES = 128 << 20  # token bytes buffered before a record batch is written

# Folders beside parts/ and manifests/ that belong to the index (written by other stages through their own
# commit point, e.g. the prune index): never reported as foreign, and removed with the index.
SIDECARS = ("prune",)

ROW_COLUMNS = ["segment_id", "video", "video_hash", "settings", "start", "end", "token_count", "frame_times",
               "thumbnail", "token_grid"]
ROW_SCHEMA = pa.schema([SEGMENT_SCHEMA.field(n) for n in ROW_COLUMNS])


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


def count_ranges(ranges: Iterable[Sequence[int]]) -> int:
    return int(sum(hi - lo for lo, hi in ranges))

