"""The prune index's files beside the parts (``prune/``): one part's arrays (:class:`PartIndex`), the prune
manifest that names the parts covered (its own commit point, replaced atomically after the files are
written and fsynced), and its garbage collection as a sidecar of the index folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maxsim.errors import IndexFormatError
from maxsim.index.files import write_atomic
from maxsim.index.manifest import Manifest
from maxsim.search.prune.residuals import ResidualCodec

PRUNE_DIR = "prune"
PRUNE_MANIFEST = "manifest.json"
PRUNE_FORMAT = 2
READ_FORMATS = (1, 2)
RESIDUAL_BITS = 2  # default bits per dimension of the residual codes
# A part is taken whole (no inverted lists read: every allowed segment is scored against its centroid
# bag) when the segments wanted from it are at least 1 / WHOLE_PART of its allowed segments: the bag
# kernel scores a segment far faster than the probe finds one once the probe must widen that far.
WHOLE_PART = 16
FILE_KEYS = ("centroids", "list_offsets", "list_rows", "bag_offsets", "bag_codes", "tok_offsets",
              "token_codes", "residuals", "codec")


@dataclass
class PartIndex:
    """Centroids, inverted lists, centroid bags and residual codes of one part (part-local rows)."""

    part_id: str
    centroids: torch.Tensor  # (n_centroids, dim) float32
    list_offsets: np.ndarray  # (n_centroids + 1,) int64
    list_rows: np.ndarray  # (total,) int32: part-local segment rows, per centroid
    bag_offsets: np.ndarray  # (n_segments + 1,) int64
    bag_codes: np.ndarray  # (total,) int16/int32: distinct centroids of each segment's tokens
    n_segments: int
    # residual codes (None for an index written before they existed, or built with nbits=None)
    tok_offsets: np.ndarray | None = None  # (n_segments + 1,) int64: each segment's tokens
    token_codes: np.ndarray | None = None  # (n_tokens,) int16/int32: each token's centroid
    residuals: np.ndarray | None = None  # (n_tokens, codec.bytes_per_token) uint8
    codec: ResidualCodec | None = None

    @property
    def has_residuals(self) -> bool:
        return self.codec is not None

    @functools.cached_property
    def nonempty_lists(self) -> torch.Tensor:
        """(n_centroids,) bool: centroids whose inverted list is not empty (the ones worth probing)."""
        return torch.from_numpy(np.diff(self.list_offsets) > 0)

    @functools.cached_property
    def n_nonempty_lists(self) -> int:
        return int(self.nonempty_lists.sum())

    @property
    def nbytes(self) -> int:
        n = int(self.centroids.numel() * 2 + self.list_offsets.nbytes + self.list_rows.nbytes
                + self.bag_offsets.nbytes + self.bag_codes.nbytes)
        if self.codec is not None:
            n += int(self.tok_offsets.nbytes + self.token_codes.nbytes + self.residuals.nbytes)
        return n


def save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def prune_stamp(root: str | Path) -> int | None:
    """A value that changes whenever the prune manifest of the index at ``root`` is replaced."""
    try:
        st = os.stat(Path(root) / PRUNE_DIR / PRUNE_MANIFEST)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns ^ st.st_ino


def read_prune_manifest(root: str | Path) -> dict[str, Any] | None:
    """The committed prune manifest of the index at ``root``, or None when it has no prune index."""
    path = Path(root) / PRUNE_DIR / PRUNE_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise IndexFormatError(f"{path}: not a valid prune manifest ({e})") from e
    if not isinstance(data, dict) or data.get("format") not in READ_FORMATS or "parts" not in data:
        formats = " or ".join(map(str, READ_FORMATS))
        raise IndexFormatError(f"{path}: not a maxsim prune manifest of format {formats}")
    return data


def prune_summary(root: str | Path, part_ids: Sequence[str]) -> dict[str, Any] | None:
    """What the prune index of the index at ``root`` covers, for the index parts ``part_ids``: parts
    covered, bytes, centroids per part, residual bits and build time; None when it has none."""
    man = read_prune_manifest(root)
    if man is None:
        return None
    entries = [man["parts"][pid] for pid in part_ids if pid in man["parts"]]
    return {
        "parts_covered": len(entries),
        "parts": len(part_ids),
        "bytes": int(sum(e.get("bytes", 0) for e in entries)),
        "centroids_per_part": sorted({int(e["n_centroids"]) for e in entries}),
        "residual_bits": sorted({e.get("nbits") for e in entries}, key=lambda b: -1 if b is None else b),
        "format": man["format"],
        "updated": man.get("time"),
    }


def write_prune_manifest(root: Path, data: dict[str, Any]) -> None:
    write_atomic(root / PRUNE_DIR / PRUNE_MANIFEST, json.dumps(data, indent=1).encode(), "prune_manifest")


def save_part_index(root: Path, idx: PartIndex) -> dict[str, Any]:
    """Write a part's files (fsynced, not yet committed); returns its prune-manifest entry."""
    d = root / PRUNE_DIR
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{idx.part_id}-{uuid.uuid4().hex[:8]}"
    arrays = {
        "centroids": idx.centroids.to(torch.float16).numpy(),
        "list_offsets": idx.list_offsets,
        "list_rows": idx.list_rows,
        "bag_offsets": idx.bag_offsets,
        "bag_codes": idx.bag_codes,
    }
    if idx.codec is not None:
        arrays.update(tok_offsets=idx.tok_offsets, token_codes=idx.token_codes, residuals=idx.residuals,
                      codec=idx.codec.to_arrays())
    files = {key: f"{stem}.{key}.npy" for key in arrays}
    for key, arr in arrays.items():
        save_npy(d / files[key], arr)
    return {
        **files,
        "n_segments": idx.n_segments,
        "n_centroids": int(idx.centroids.shape[0]),
        "n_entries": int(idx.list_rows.size),
        "nbits": None if idx.codec is None else idx.codec.nbits,
        "bytes": idx.nbytes,
    }


def check_ids(path: Path, codes: np.ndarray, n_centroids: int, part_id: str) -> None:
    """Centroid ids read from ``path`` must index the part's centroids (the kernels trust them)."""
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= n_centroids):
        raise IndexFormatError(f"{path}: centroid ids of part {part_id} fall outside its {n_centroids} "
                               "centroids")


def load_part_index(root: Path, part_id: str, entry: dict[str, Any], dim: int) -> PartIndex:
    """Open a part's files memory-mapped, checking them against the manifest entry."""
    d = root / PRUNE_DIR
    keys = FILE_KEYS[:5] + (FILE_KEYS[5:] if entry.get("residuals") else ())
    try:
        a = {key: np.load(d / entry[key], mmap_mode="r") for key in keys}
    except (OSError, ValueError, KeyError) as e:
        raise IndexFormatError(f"{d}: prune files of part {part_id} are missing or unreadable ({e})") from e
    c, off, rows, bag_off, bag_codes = (a[key] for key in FILE_KEYS[:5])
    n_seg = int(entry["n_segments"])
    if (c.ndim != 2 or c.shape[1] != dim or off.shape != (c.shape[0] + 1,) or int(off[-1]) != rows.size
            or bag_off.shape != (n_seg + 1,) or int(bag_off[-1]) != bag_codes.size
            or bag_codes.size != rows.size):
        raise IndexFormatError(
            f"{d / entry['centroids']}: prune files of part {part_id} do not fit together "
            f"(centroids {c.shape}, dim {dim}, offsets {off.shape}, {rows.size} list entries, "
            f"{n_seg} segments, bag offsets {bag_off.shape}, {bag_codes.size} bag entries)"
        )
    check_ids(d / entry["bag_codes"], bag_codes, c.shape[0], part_id)
    idx = PartIndex(part_id, torch.from_numpy(np.asarray(c, dtype=np.float32)), off, rows, bag_off,
                    bag_codes, n_seg)
    if "residuals" in a:
        try:
            codec = ResidualCodec.from_arrays(a["codec"], int(entry["nbits"]), dim)
        except (ValueError, KeyError, TypeError) as e:
            raise IndexFormatError(f"{d / entry['codec']}: residual codec of part {part_id} is unusable ({e})"
                                   ) from e
        t_off, t_codes, res = a["tok_offsets"], a["token_codes"], a["residuals"]
        if (t_off.shape != (n_seg + 1,) or t_codes.shape != (int(t_off[-1]),)
                or res.shape != (t_codes.size, codec.bytes_per_token)):
            raise IndexFormatError(
                f"{d / entry['residuals']}: residual codes of part {part_id} do not fit together "
                f"(token offsets {t_off.shape} for {n_seg} segments, {t_codes.size} token codes, residuals "
                f"{res.shape}, expected {codec.bytes_per_token} bytes per token)"
            )
        check_ids(d / entry["token_codes"], t_codes, c.shape[0], part_id)
        idx.tok_offsets, idx.token_codes, idx.residuals, idx.codec = t_off, t_codes, res, codec
    return idx


class PruneSidecar:
    """The prune index as a sidecar of the index folder (see :class:`maxsim.index.Sidecar`): garbage
    collection removes its temporary files and the arrays no prune-manifest entry names (leftovers of an
    interrupted build)."""

    def collect_garbage(self, root: Path, latest: Manifest) -> list[str]:
        d = Path(root) / PRUNE_DIR
        if not d.is_dir():
            return []
        try:
            man = read_prune_manifest(root)
        except IndexFormatError:
            return []  # a damaged prune manifest: leave its files for `maxsim prune --rebuild`
        named = set() if man is None else {
            f for e in man["parts"].values() for key, f in e.items() if key in FILE_KEYS}
        removed = []
        for f in d.iterdir():
            stale_tmp = f.name.startswith(".") and f.name.endswith(".tmp")
            if stale_tmp or (f.suffix == ".npy" and f.name not in named):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                    removed.append(str(f.relative_to(root)))
        return removed
