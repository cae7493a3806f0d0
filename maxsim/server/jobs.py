"""Background ingest jobs: one at a time, file by file, with progress a client can poll."""

from __future__ import annotations

import itertools
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maxsim.errors import LockedError
from maxsim.ingest import IngestReport, expand_paths
from maxsim.media.progress import ProgressCallback, VideoProgress


class PathRefused(ValueError):
    """A path a client asked to ingest that the server will not read."""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _files_under(raw: str, root: Path) -> list[str]:
    if "\x00" in raw:
        raise PathRefused(f"path {raw[:200]!r} contains a NUL byte")
    p = Path(raw)
    p = (p if p.is_absolute() else root / p).resolve()
    if not _inside(p, root):
        raise PathRefused(f"path {raw[:200]!r} is outside the ingest root {root}")
    if not p.exists():
        raise PathRefused(f"path {raw[:200]!r} does not exist (under the ingest root {root})")
    if not (p.is_dir() or p.is_file()):
        raise PathRefused(f"path {raw[:200]!r} is neither a regular file nor a folder (a named pipe, a "
                          "device or a socket): only files are read")
    files = []
    for f in expand_paths([p]):  # the file itself, or the video files under the folder
        real = Path(f).resolve()
        if _inside(real, root) and real.is_file():  # a symlink inside the root may point out of it
            files.append(str(real))
    return files


def check_ingest_paths(paths: list[str], root: Path) -> list[str]:
    """The files to ingest for ``paths`` (files, or folders searched recursively for videos), each
    resolved (symlinks followed) and inside ``root``; PathRefused names the first path that is not,
    or that does not exist. Relative paths are taken relative to ``root``."""
    root = root.resolve()
    files: list[str] = []
    for raw in paths:
        try:
            files += _files_under(raw, root)
        except OSError as e:  # a name too long, a loop of symlinks, no permission...
            raise PathRefused(f"path {raw[:200]!r} cannot be used: {e.strerror or e}") from e
    return list(dict.fromkeys(files))


@dataclass
class Job:
    """One ingest job's state, as GET /jobs/{id} shows it."""

    id: str
    files: list[str]
    status: str = "queued"  # queued | running | done | failed
    done: int = 0
    current: str | None = None
    video: dict[str, Any] | None = None  # the current file's VideoProgress.to_dict()
    ingested: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    segments: int = 0
    version: int | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        total = len(self.files)
        return {
            "id": self.id,
            "status": self.status,
            "total": total,
            "done": self.done,
            "progress": (self.done / total) if total else 1.0,
            "current": self.current,
            "video": dict(self.video) if self.video is not None else None,
            "ingested": list(self.ingested),
            "skipped": list(self.skipped),
            "failed": list(self.failed),
            "segments": self.segments,
            "version": self.version,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


class IngestJobs:
    """Runs ingest jobs one after another on a background thread; remembers the last ``keep`` jobs.

    ``ingest(path)`` ingests one file in its own commit (the server's: ``engine.ingest([path])`` under its
    version guard, see :meth:`maxsim.server.state.ServerState.ingest_file`), so progress is per file and each
    video becomes searchable as soon as it is done. Its second argument receives the file's
    :class:`~maxsim.media.progress.VideoProgress` as it decodes and encodes: the job shows it as ``video``.
    """

    def __init__(self, ingest: Callable[[str, ProgressCallback], IngestReport], keep: int = 100) -> None:
        self._ingest = ingest
        self._keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maxsim-ingest")
        self._counter = itertools.count(1)

    def submit(self, files: list[str]) -> Job:
        """Queue a job for ``files`` (already checked); returns it."""
        job = Job(id=f"{next(self._counter)}-{uuid.uuid4().hex[:8]}", files=list(files))
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs.values()))
                if oldest.status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job) -> None:
        job.status, job.started = "running", time.time()
        try:
            for f in job.files:
                job.current, job.video = f, None

                def tell(p: VideoProgress, job: Job = job) -> None:
                    job.video = p.to_dict()

                try:
                    report = self._ingest(f, tell)
                except LockedError as e:
                    job.failed.append({"path": f, "reason": str(e)})
                else:
                    job.ingested += report.ingested
                    job.skipped += [{"path": p, "reason": r} for p, r in report.skipped]
                    job.failed += [{"path": p, "reason": r} for p, r in report.failed]
                    job.segments += report.segments
                    if report.version is not None:
                        job.version = report.version
                job.done += 1
            job.status = "done"
        except Exception as e:
            job.status = "failed"
            job.error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            job.current, job.video = None, None
            job.finished = time.time()
