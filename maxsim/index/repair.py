"""Checking an index byte by byte (:func:`verify_index`, ``maxsim verify``) and repairing what can be
repaired (:func:`plan_repair` / :func:`apply_repair`, ``maxsim repair``).

A repair never guesses: it restores ``manifest.json`` from the newest retained copy in ``manifests/``
whose parts are all there (when the file is missing or damaged), and removes parts whose files are
missing or fail their checksums together with every video that has a segment in them (those videos are
listed: ingesting them again restores them). The plan is shown first; nothing changes until it is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maxsim.errors import IndexFormatError, IndexNotFoundError, IndexTooNewError
from maxsim.index.files import map_file, open_ipc, version_files, version_path, write_atomic
from maxsim.index.format import MANIFEST, column_numpy, in_ranges, merge_ranges, part_file_keys
from maxsim.index.integrity import FileCheck
from maxsim.index.manifest import Manifest, read_manifest
from maxsim.index.snapshot import Snapshot, tombstones_of_kept_parts


@dataclass
class PartCheck:
    """What :func:`verify_index` found about one part: ``status`` is ``ok`` (every byte matches its
    checksums), ``unchecked`` (written before checksums existed: only its structure was read),
    ``missing`` (a file is gone) or ``damaged``."""

    part: str
    status: str
    problems: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # videos with a live segment in a bad part
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    """The result of :func:`verify_index` for one version of an index."""

    root: str
    version: int
    parts: list[PartCheck]

    @property
    def bad(self) -> list[PartCheck]:
        return [p for p in self.parts if p.status in ("missing", "damaged")]

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def unchecked(self) -> int:
        return sum(p.status == "unchecked" for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "version": self.version, "ok": self.ok, "unchecked": self.unchecked,
                "parts": [p.to_dict() for p in self.parts]}


def _stored_ids(root: Path, part: dict[str, Any], intact: bool) -> np.ndarray | None:
    """Segment ids a part stores, read from its segment table when that is intact; else None."""
    if not intact:
        return None
    try:
        table = open_ipc(root / part["segments"]).read_all()
        return column_numpy(table, "segment_id").astype(np.int64)
    except (IndexFormatError, KeyError):
        return None


def _videos_in(man: Manifest, part: dict[str, Any], ids: np.ndarray | None) -> list[str]:
    """Videos with a live segment stored in ``part`` (``ids``: its stored ids; None: its id span)."""
    if ids is None:  # the segment table cannot be trusted: every video whose ids fall in the part's span
        lo, hi = int(part.get("min_id", 0)), int(part.get("max_id", -1)) + 1
        ids = np.arange(lo, max(lo, hi), dtype=np.int64)
    ids = ids[~in_ranges(ids, man.deleted)]
    if ids.size == 0:
        return []
    return sorted(v for v, e in (man.videos or {}).items() if in_ranges(ids, e["ranges"]).any())


def check_part(root: Path, man: Manifest, part: dict[str, Any]) -> PartCheck:
    """Check one part's files: present, of the size written, every byte matching its checksums."""
    pid = part["id"]
    sums = part.get("checksums")
    out = PartCheck(pid, "ok")
    seg_ok = True
    for key in part_file_keys(part):
        path = root / part[key]
        if not path.is_file():
            out.status = "missing"
            out.problems.append(f"{path}: missing")
            seg_ok = seg_ok and key != "segments"
            continue
        try:
            mapped = map_file(path)
            out.bytes += mapped.size()
            if sums:
                check = FileCheck(path, mapped, sums[key], root)
                bad = [p for i in range(len(check.ranges)) if (p := check.problem(i))]
                if bad:
                    raise IndexFormatError(f"{path}: {'; '.join(bad)}")
            else:
                open_ipc(path, mapped=mapped).read_all()  # no checksums: the structure at least
                out.status = "unchecked" if out.status == "ok" else out.status
        except IndexFormatError as e:
            out.status = "damaged" if out.status != "missing" else out.status
            out.problems.append(str(e).split(". Nothing was scored")[0])
            seg_ok = seg_ok and key != "segments"
    if out.status in ("missing", "damaged"):
        out.videos = _videos_in(man, part, _stored_ids(root, part, seg_ok))
    return out


def verify_index(root: str | Path, version: int | None = None, progress: Any = None) -> VerifyReport:
    """Read every byte of every part of a version (the latest by default) against its checksums.

    ``progress(n_bytes)`` is called after each part (e.g. a tqdm's ``update``). A damaged manifest raises
    :class:`IndexFormatError` as opening the index does (``maxsim repair`` restores it)."""
    root = Path(root)
    man = read_manifest(root, version)
    checks = []
    for part in man.parts:
        checks.append(check_part(root, man, part))
        if progress is not None:
            progress(checks[-1].bytes)
    return VerifyReport(str(root), man.version, checks)


@dataclass
class RepairPlan:
    """What :func:`apply_repair` would do to an index (see :func:`plan_repair`)."""

    root: str
    problems: list[str] = field(default_factory=list)
    restore: int | None = None  # restore manifest.json from the copy of this version
    skipped_copies: list[tuple[int, str]] = field(default_factory=list)  # newer copies that cannot be used
    drop_parts: list[str] = field(default_factory=list)
    drop_videos: list[str] = field(default_factory=list)
    unrepairable: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        return self.restore is None and not self.drop_parts and self.unrepairable is None

    def actions(self) -> list[str]:
        """The plan in words, one line per step."""
        out = []
        if self.restore is not None:
            out.append(f"restore {MANIFEST} from {version_path(Path(self.root), self.restore)} "
                       f"(version {self.restore})")
        for v, why in self.skipped_copies:
            out.append(f"  (not version {v}: {why})")
        if self.drop_parts:
            out.append(f"remove {len(self.drop_parts)} damaged or missing part(s) from the index: "
                       f"{', '.join(self.drop_parts)}")
            out.append(f"remove the {len(self.drop_videos)} video(s) with segments in them (ingest them "
                       "again to restore them):")
            out += [f"  {v}" for v in self.drop_videos]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "problems": self.problems, "restore_version": self.restore,
                "skipped_copies": [{"version": v, "reason": r} for v, r in self.skipped_copies],
                "drop_parts": self.drop_parts, "drop_videos": self.drop_videos,
                "unrepairable": self.unrepairable, "actions": self.actions()}


def _usable_copy(root: Path, v: int) -> tuple[Manifest | None, str]:
    """The manifest of retained copy ``v`` if every part file it lists is there with its size."""
    path = version_path(root, v)
    try:
        man = Manifest.from_json(path.read_text(), path)
    except (IndexFormatError, OSError, UnicodeDecodeError) as e:
        return None, f"its copy is unreadable ({e})"
    if man.version != v:
        return None, f"its copy says version {man.version}"
    for part in man.parts:
        for key in part_file_keys(part):
            f = root / part[key]
            sums = (part.get("checksums") or {}).get(key)
            if not f.is_file():
                return None, f"{f.name} is missing"
            if sums and isinstance(sums, list) and sums and f.stat().st_size != sums[-1][0]:
                return None, f"{f.name} has another size than written"
    return man, ""


def plan_repair(root: str | Path) -> RepairPlan:
    """What repairing the index at ``root`` takes (nothing is changed): see the module docstring."""
    root = Path(root)
    plan = RepairPlan(str(root))
    if not root.is_dir():
        raise IndexNotFoundError(f"no index at {root} (the folder does not exist)")
    try:
        man = read_manifest(root)
    except IndexTooNewError:
        raise  # not damage: a newer maxsim reads it
    except IndexFormatError as e:
        plan.problems.append(str(e).split(". To recover")[0].split(". Copies of the last")[0])
        man = None
        for v in reversed(version_files(root)):
            man, why = _usable_copy(root, v)
            if man is not None:
                plan.restore = v
                break
            plan.skipped_copies.append((v, why))
        if man is None:
            plan.unrepairable = (f"no copy in {root / 'manifests'} can be restored: the index cannot be "
                                 "repaired (restore it from a backup)")
            return plan
    report = VerifyReport(str(root), man.version, [check_part(root, man, p) for p in man.parts])
    for p in report.bad:
        plan.problems += p.problems
        plan.drop_parts.append(p.part)
        plan.drop_videos = sorted(set(plan.drop_videos) | set(p.videos))
    return plan


def apply_repair(store: Any, plan: RepairPlan) -> Manifest | None:
    """Carry out ``plan`` on ``store`` (a :class:`~maxsim.index.store.Store` holding the writer lock):
    restore ``manifest.json``, then commit the removal of the damaged parts and their videos as a new
    version. Returns the manifest committed last (None when there was nothing to do)."""
    if plan.unrepairable is not None:
        raise IndexFormatError(plan.unrepairable)
    root = Path(store.root)
    done: Manifest | None = None
    if plan.restore is not None:
        data = version_path(root, plan.restore).read_bytes()
        write_atomic(root / MANIFEST, data, "repair.manifest")
        done = store.manifest()
    if plan.drop_parts:
        base = store.manifest()
        dropped = set(plan.drop_parts)
        kept = base.copy()
        kept.parts = [p for p in base.parts if p["id"] not in dropped]
        videos = [v for v in plan.drop_videos if v in (base.videos or {})]
        kept.deleted = merge_ranges(base.deleted, *((base.videos or {})[v]["ranges"] for v in videos))
        snap = Snapshot(root, kept)
        tombs = tombstones_of_kept_parts(snap, kept.deleted, range(len(kept.parts)))
        done = store.commit(base, removed_parts=sorted(dropped), delete_videos=videos, deleted_ranges=tombs,
                            op="repair", info={"parts_removed": sorted(dropped), "videos": videos[:20]})
    return done


__all__ = ["PartCheck", "RepairPlan", "VerifyReport", "apply_repair", "check_part", "plan_repair",
           "verify_index"]
