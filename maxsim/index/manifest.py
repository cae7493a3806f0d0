"""The manifest: the committed state of one version of an index (its parts, its catalog of videos, the
id ranges of deleted segments, its history), read and written as JSON.

Manifests of the current format are read as they are. Older ones are upgraded on reading in one place:
a plain list of deleted ids becomes ranges here; a manifest from before the video catalog (``videos`` is
None) gets its catalog from the segment tables through :func:`with_catalog`, which returns a new
manifest and never changes the one given.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from maxsim.errors import IndexFormatError, IndexNotFoundError, IndexTooNewError, VersionNotFoundError
from maxsim.index.files import retained_versions, version_files, version_path
from maxsim.index.format import (
    FORMAT_VERSION,
    KEEP_VERSIONS,
    MANIFEST,
    MANIFESTS,
    column_numpy,
    count_ranges,
    ranges_from_ids,
)


@dataclass
class Manifest:
    """The committed state of one version of an index.

    ``videos`` maps a video path to ``{"hash", "settings", "ranges", "segments", "tokens"}`` (``ranges``:
    its segment ids as half-open ``[lo, hi)`` ranges), plus, when known, ``"size"`` and ``"mtime_ns"`` of
    the file when it was ingested (entries written before they were recorded lack them). ``deleted`` holds
    the half-open id ranges of segments that are no longer live but still sit in a part (until a
    compaction drops them). ``sampler`` is the frame-sampling recipe the index was created with (see
    :meth:`maxsim.media.frames.FrameSampler.to_record`); None for an index created before recipes were
    recorded.
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
    sampler: dict[str, Any] | None = None

    def to_json(self) -> str:
        # compact: the C encoder (json's indent= falls back to pure Python, ~20x slower on big catalogs)
        return json.dumps(self.__dict__, separators=(",", ":"))

    def copy(self) -> Manifest:
        return Manifest(**json.loads(self.to_json()))

    @property
    def n_deleted(self) -> int:
        """Segments deleted but still stored (until compaction)."""
        return count_ranges(self.deleted)

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
        kept = [] if isinstance(e, IndexTooNewError) else version_files(root)
        if kept:
            newest = version_path(root, kept[-1])
            raise IndexFormatError(
                f"{e}. Copies of the last committed versions are kept in {root / MANIFESTS}: to recover, "
                f"copy the newest one over it (cp {newest} {path})"
            ) from e
        raise
    if version is None or version == latest.version:
        return latest
    if version > latest.version or version < 0:
        raise VersionNotFoundError(f"{root}: no version {version} (the latest is {latest.version})")
    vpath = version_path(root, version)
    if not vpath.is_file():
        raise VersionNotFoundError(
            f"{root}: version {version} is no longer kept (retained versions: "
            f"{retained_versions(root, latest.version)}); garbage collection keeps the last "
            f"{KEEP_VERSIONS} by default"
        )
    return Manifest.from_json(vpath.read_text(), vpath)


def catalog_from_table(table: pa.Table, live: np.ndarray) -> dict[str, dict[str, Any]]:
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


def with_catalog(manifest: Manifest, table: pa.Table, live: np.ndarray) -> Manifest:
    """``manifest`` with its catalog of videos: itself when it has one; for an index written before the
    catalog existed, a copy whose catalog is built from the version's segment table (``live``: which rows
    are not deleted). The manifest given is never changed."""
    if manifest.videos is not None:
        return manifest
    return dataclasses.replace(manifest, videos=catalog_from_table(table, live))
