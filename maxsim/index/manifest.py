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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from maxsim.errors import IndexFormatError, IndexNotFoundError, IndexTooNewError, VersionNotFoundError
from maxsim.index.files import retained_versions, version_files, version_path
from maxsim.index.format import (
    DTYPES,
    FORMAT_VERSION,
    KEEP_VERSIONS,
    MANIFEST,
    MANIFESTS,
    PART_FILE,
    PARTS,
    column_numpy,
    count_ranges,
    part_file_keys,
    ranges_from_ids,
)
from maxsim.types import decode_path


@dataclass
class Manifest:
    """The committed state of one version of an index.

    ``videos`` maps a video path to ``{"hash", "settings", "ranges", "segments", "tokens"}`` (``ranges``:
    its segment ids as half-open ``[lo, hi)`` ranges), plus, when known, ``"size"`` and ``"mtime_ns"`` of
    the file when it was ingested (entries written before they were recorded lack them). ``deleted`` holds
    the half-open id ranges of segments that are no longer live but still sit in a part (until a
    compaction drops them). ``sampler`` is the frame-sampling recipe the index was created with (see
    :meth:`maxsim.media.frames.FrameSampler.to_record`); None for an index created before recipes were
    recorded. ``transcript`` is the transcript channel's recipe once a video was ingested with
    transcripts: ``{"encoder": <record of the text encoder>, "dim": <its vector size>, "speech": <record
    of the speech recognizer or None>}``; None for an index without transcripts.
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
    transcript: dict[str, Any] | None = None

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
        if not _is_int(fv) or fv < 1:
            raise IndexFormatError(f"{path}: format_version must be a whole number, got {fv!r}")
        if fv > FORMAT_VERSION:
            raise IndexTooNewError(
                f"{path}: written by a newer maxsim (format {fv}; this version reads up to "
                f"{FORMAT_VERSION}): upgrade maxsim to open it"
            )
        known = set(cls.__dataclass_fields__)
        if "videos" not in data:
            data["videos"] = None  # written before the catalog existed: rebuilt from the segment tables
        deleted = data.get("deleted", [])
        if isinstance(deleted, list) and deleted and _is_int(deleted[0]):  # a plain list of ids
            if not all(_is_int(i) for i in deleted):
                raise IndexFormatError(f"{path}: 'deleted' must hold segment ids or [start, end) ranges")
            data["deleted"] = ranges_from_ids(deleted)
        missing = [k for k in ("encoder", "dim") if k not in data]
        if missing:
            raise IndexFormatError(f"{path}: manifest is missing fields ({', '.join(missing)})")
        check_fields(data, path)
        return cls(**{k: v for k, v in data.items() if k in known})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_range(r: Any) -> bool:
    return isinstance(r, list) and len(r) == 2 and _is_int(r[0]) and _is_int(r[1]) and 0 <= r[0] < r[1]


_PART_INTS = ("n_segments", "n_tokens", "token_bytes", "min_id", "max_id")
_VIDEO_INTS = ("segments", "tokens", "size", "mtime_ns")


def check_fields(data: dict[str, Any], path: Path) -> None:
    """Refuse a manifest whose fields have the wrong shape, with an :class:`IndexFormatError` naming the
    file and the field (a hand-edited or damaged manifest must not fail later with a raw Python error)."""

    def bad(what: str, value: Any) -> IndexFormatError:
        return IndexFormatError(f"{path}: {what}, got {str(value)[:120]!r}: the manifest is damaged")

    if not isinstance(data["encoder"], dict):
        raise bad("'encoder' must be an object", data["encoder"])
    if data.get("sampler") is not None and not isinstance(data["sampler"], dict):
        raise bad("'sampler' must be an object or null", data["sampler"])
    tr = data.get("transcript")
    if tr is not None and not (isinstance(tr, dict) and isinstance(tr.get("encoder"), dict)
                               and _is_int(tr.get("dim")) and tr["dim"] >= 1):
        raise bad("'transcript' must be null or an object with 'encoder' and a positive 'dim'", tr)
    if not _is_int(data["dim"]) or data["dim"] < 1:
        raise bad("'dim' must be a positive whole number", data["dim"])
    if data.get("dtype", "float16") not in DTYPES:
        raise bad(f"'dtype' must be one of {', '.join(DTYPES)}", data.get("dtype"))
    for key in ("version", "next_segment_id"):
        if not _is_int(data.get(key, 0)) or data.get(key, 0) < 0:
            raise bad(f"'{key}' must be a whole number >= 0", data.get(key))
    parts = data.get("parts", [])
    if not isinstance(parts, list):
        raise bad("'parts' must be a list", parts)
    for p in parts:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str):
            raise bad("each part must be an object with an 'id'", p)
        for key in part_file_keys(p):
            name = p.get(key)
            m = PART_FILE.match(name[len(PARTS) + 1:]) if isinstance(name, str) else None
            if not (m and name.startswith(PARTS + "/") and m.group(1) == p["id"] and m.group(2) == key):
                raise bad(f"part {p['id']!r} must name its '{key}' file parts/{p['id']}.{key}.arrow", name)
        for key in _PART_INTS:
            if (key in p or key in _PART_INTS[:2]) and not _is_int(p.get(key)):
                raise bad(f"part {p['id']!r}: '{key}' must be a whole number", p.get(key))
        sums = p.get("checksums")
        if sums is not None and not (isinstance(sums, dict) and isinstance(sums.get("segments"), list)
                                     and isinstance(sums.get("tokens"), list)):
            raise bad(f"part {p['id']!r}: 'checksums' must hold 'segments' and 'tokens' lists", sums)
        if p.get("cues") and sums is not None and not isinstance(sums.get("cues"), list):
            raise bad(f"part {p['id']!r}: 'checksums' must hold a 'cues' list", sums)
    deleted = data.get("deleted", [])
    if not isinstance(deleted, list) or not all(_is_range(r) for r in deleted):
        raise bad("'deleted' must be a list of [start, end) id ranges", deleted)
    videos = data.get("videos")
    if videos is not None:
        if not isinstance(videos, dict):
            raise bad("'videos' must be an object (video path -> entry)", videos)
        for v, e in videos.items():
            if not (isinstance(e, dict) and isinstance(e.get("hash"), str)
                    and isinstance(e.get("settings"), str) and isinstance(e.get("ranges"), list)
                    and all(_is_range(r) for r in e["ranges"])
                    and all(_is_int(e.get(k, 0)) for k in _VIDEO_INTS)
                    and "segments" in e and "tokens" in e):
                raise bad(f"catalog entry of {v!r} must have hash, settings, ranges, segments and tokens", e)
    history = data.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad("'history' must be a list of objects", history)



def damage_without_manifest(root: Path) -> str | None:
    """Why the folder ``root``, which has no manifest.json, holds a damaged index rather than none (None:
    it holds no index). An index whose manifest.json went missing still has its parts and the copies of
    its versions in manifests/; a create that was killed leaves at most the copy of version 0."""
    copies = [v for v in version_files(root) if v > 0]
    pdir = root / PARTS
    try:
        parts = sum(1 for n in os.listdir(pdir) if PART_FILE.match(n)) if pdir.is_dir() else 0
    except OSError:
        parts = 0
    if not copies and not parts:
        return None
    has = ", ".join(x for x in (
        f"{len(copies)} version {'copy' if len(copies) == 1 else 'copies'} in {MANIFESTS}/" if copies else "",
        f"{parts} part files in {PARTS}/" if parts else "") if x)
    if copies:
        newest = version_path(root, copies[-1])
        fix = (f"run `maxsim repair {root}` to restore the newest usable version (it shows what it will do; "
               f"--yes applies it), or copy {newest} to {root / MANIFEST}")
    else:
        fix = (f"there is no copy of a version to restore it from: move {root / PARTS} away (or delete "
               "it) to start a new index in this folder")
    return (f"{root}: {MANIFEST} is missing but the index's files are still there ({has}): the index is "
            f"damaged, not absent, and nothing was changed. To recover, {fix}")


def read_manifest(root: str | Path, version: int | None = None) -> Manifest:
    """The committed manifest of the index at ``root`` (the latest, or a retained ``version``).

    A folder without manifest.json is no index (:class:`IndexNotFoundError`) unless the index's other
    files are there: then it is a damaged index (:class:`IndexFormatError` saying how to restore it),
    never to be taken for an empty folder and overwritten."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        if not root.exists():
            raise IndexNotFoundError(f"no index at {root} (the folder does not exist)")
        damage = damage_without_manifest(root)
        if damage is not None:
            raise IndexFormatError(damage)
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
                f"{e}. Copies of the last committed versions are kept in {root / MANIFESTS}: to recover, run "
                f"`maxsim repair {root}` (it restores the newest usable one after showing what it will do) "
                f"or copy the newest one over it (cp {newest} {path})"
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
    videos = [decode_path(v) for v in table.column("video").to_pylist()]
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
