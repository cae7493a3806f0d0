"""Ingest: videos in, one committed version out.

:class:`Ingester` decides per file (skip, fail, encode), writes the segments of the files it encodes into
a new part as they come, takes back the rows of a video that fails half way, and commits (once, or every
``commit_every`` videos). What turns a video into segment records is a :class:`VideoEncoder`:
:class:`LocalVideoEncoder` (decode, segment, sample and encode in this process) or
:class:`maxsim.distributed.RayVideoEncoder` (a Ray Data pipeline with an encoder actor pool); both give
the same records, so the index is the same.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from maxsim.encoders.record import encoder_frame_size, encoder_settings, encoder_token_grid, vector_settings
from maxsim.errors import EncoderOutputError, IndexError_, IndexFormatError, VideoError
from maxsim.index.manifest import Manifest
from maxsim.index.parts import SegmentRecord
from maxsim.index.store import Store
from maxsim.media.frames import FrameSampler
from maxsim.media.progress import ProgressCallback, VideoProgress, VideoProgressBar
from maxsim.media.segment import Segmenter
from maxsim.media.video import content_hash
from maxsim.media.worker import isolated_clips, local_clips, warm_up
from maxsim.specs import plural
from maxsim.transcripts.stage import TranscriptStage
from maxsim.types import Clip, Encoder, video_key

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
)


@dataclass
class IngestReport:
    """What an ingest did to each file."""

    ingested: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    segments: int = 0
    cues: int = 0  # transcript lines stored (videos ingested with transcripts)
    version: int | None = None  # the index version committed, None when nothing changed
    encoder: str | None = None  # the name of the encoder that ran (or would have run)
    encoder_source: str | None = None  # why that encoder: "given", "recorded in the index" or "default"

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingested": self.ingested,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "segments": self.segments,
            "cues": self.cues,
            "version": self.version,
            "encoder": self.encoder,
            "encoder_source": self.encoder_source,
        }

    def __str__(self) -> str:
        lines = [
            f"ingested {plural(len(self.ingested), 'file')} ({plural(self.segments, 'segment')}"
            + (f", {plural(self.cues, 'transcript line')}" if self.cues else "") + "), "
            f"skipped {len(self.skipped)}, failed {len(self.failed)}"
        ]
        lines += [f"  skipped {p}: {r}" for p, r in self.skipped]
        lines += [f"  FAILED  {p}: {r}" for p, r in self.failed]
        return "\n".join(lines)


def _as_list(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str | os.PathLike]:
    """One path (a str or PathLike) as a list of one; any other iterable of paths as a list."""
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    if isinstance(paths, bytes):
        raise TypeError("paths must be str or os.PathLike, not bytes")
    return list(paths)


def expand_paths(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    failed: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Files given directly, plus the video files found (recursively, sorted) in folders given.

    ``paths`` is one path or several. A folder (or sub-folder) that cannot be listed is appended to
    ``failed`` as ``(path, reason)`` and the rest is still expanded; without ``failed`` the first such
    error is raised (:class:`OSError`).
    """
    out: list[str] = []

    def error(e: OSError) -> None:
        if failed is None:
            raise e
        where = e.filename if e.filename is not None else "?"
        failed.append((str(where), f"cannot list folder ({e.strerror or e})"))

    for p in _as_list(paths):
        p = Path(p)
        try:
            is_dir = p.is_dir()
        except OSError as e:  # e.g. a name too long: is_dir() only hides "does not exist"-like errors
            error(e)
            continue
        if not is_dir:
            out.append(str(p))
            continue
        found = []
        for folder, dirs, files in os.walk(p, onerror=error):
            dirs.sort()
            for name in files:
                f = Path(folder, name)
                if f.suffix.lower() in VIDEO_EXTENSIONS:
                    try:
                        if f.is_file():
                            found.append(str(f))
                    except OSError as e:
                        error(e)
        out += sorted(found)
    return out


# A file modified less than this before its stat may change again within the same timestamp tick (file
# systems keep coarse times: jiffies, 2 s on FAT) without its mtime moving: its stat is not trusted.
_RACY_NS = 2_000_000_000


def file_stat(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file whose stat can vouch for its content later; else None."""
    try:
        now = time.time_ns()
        st = os.stat(path)
    except OSError:
        return None
    if not statmod.S_ISREG(st.st_mode) or st.st_mtime_ns > now - _RACY_NS:
        return None  # None: hashed every time (a file still being written is never skipped by its stat)
    return int(st.st_size), int(st.st_mtime_ns)


def decide(video: str, old: dict[str, Any] | None, settings: str) -> tuple[str, str, tuple[int, int] | None]:
    """What to do with ``video`` given its catalog entry ``old``: ``("skip", "", stat)`` when it is
    indexed with these settings and its size and time (not read again) or content are the same,
    ``("fail", reason, stat)`` when it cannot be read, else ``("encode", content hash, stat)``. The stat
    is taken before hashing, so a later change shows as a new stat."""
    stat = file_stat(video)
    same = old is not None and old["settings"] == settings
    if same and stat is not None and (old.get("size"), old.get("mtime_ns")) == stat:
        return "skip", "", stat
    try:
        digest = content_hash(video)
    except VideoError as e:
        return "fail", e.reason, stat
    if same and old["hash"] == digest:
        return "skip", "", stat
    return "encode", digest, stat


def failure_reason(e: Exception) -> str:
    """What to tell the user about a video that failed to ingest."""
    if isinstance(e, VideoError):
        return e.reason
    if isinstance(e, EncoderOutputError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def recorded_sampler(manifest: Manifest, where: str | os.PathLike) -> FrameSampler:
    """The frame-sampling recipe the index at ``where`` records (the old default when it records none,
    see :meth:`~maxsim.media.frames.FrameSampler.from_record`); IndexFormatError for a damaged record."""
    try:
        return FrameSampler.from_record(manifest.sampler)
    except ValueError as e:
        raise IndexFormatError(f"{where}: the manifest's frame-sampling recipe is damaged: {e}") from None


def sized_sampler(sampler: FrameSampler, encoder: Encoder) -> FrameSampler:
    """The recipe an ingest samples with: ``sampler`` with its frames sized for ``encoder`` (the encoder's
    ``frame_size`` for ``max_frames`` frames) unless the recipe sets ``max_side``."""
    return sampler.sized(encoder_frame_size(encoder, sampler.max_frames))


def settings_key(segmenter: Segmenter, sampler: FrameSampler, encoder: Encoder,
                 transcripts: TranscriptStage | None = None) -> str:
    """What a video's vectors depend on besides its content: a video indexed under another key is
    re-encoded by the next ingest (e.g. after opening the index with another frame sampler or with
    encoder settings that change the vectors, such as a visual token budget)."""
    import json

    key: dict[str, Any] = {"segmenter": segmenter.name, "sampler": sampler.name, "encoder": encoder.name}
    enc_settings = vector_settings(encoder_settings(encoder))
    if enc_settings:
        key["encoder_settings"] = enc_settings
    if transcripts is not None:  # where transcripts come from and how they are encoded
        key["transcripts"] = transcripts.settings_key()
    return json.dumps(key, sort_keys=True, default=str)


def check_vectors(v: Any, dim: int, encoder_name: str, what: str) -> torch.Tensor:
    """One clip's vectors as float32 on the CPU, or :class:`EncoderOutputError` saying what is wrong
    (not a ``(n_tokens, dim)`` tensor, no token, NaN or inf)."""
    if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[1] != dim:
        shape = tuple(v.shape) if hasattr(v, "shape") else type(v).__name__
        raise EncoderOutputError(
            f"encoder {encoder_name!r} returned {shape} for {what}; expected (n_tokens, {dim})"
        )
    if v.shape[0] == 0:
        raise EncoderOutputError(f"encoder {encoder_name!r} returned no token for {what}")
    v = v.detach().float().cpu()
    if not bool(torch.isfinite(v).all()):
        raise EncoderOutputError(f"encoder {encoder_name!r} returned NaN or inf values for {what}")
    return v


class VideoEncoder(Protocol):
    """Turns videos into their segment records, for :class:`Ingester`.

    ``needs_plan``: True when it must know every video it will be asked for before the first (a pipeline
    that reads ahead); :meth:`plan` then receives them, in the order they will be asked for.
    """

    needs_plan: bool

    def plan(self, videos: Sequence[str]) -> None: ...

    def __call__(self, video: str, digest: str, settings: str, segmenter: Segmenter
                 ) -> Iterator[SegmentRecord]: ...

    def close(self) -> None: ...


class LocalVideoEncoder:
    """Decodes, segments and samples each video, and encodes its clips in this process, ``batch_size``
    clips per encoder call; memory holds one batch of clips and the frames of the segments still open.

    With ``isolate`` (the default) the decoding runs in a worker process
    (:func:`~maxsim.media.worker.isolated_clips`), so that a native decoder crashing or hanging on a file
    fails that file only; ``isolate=False`` decodes in this process. ``on_progress`` receives a
    :class:`~maxsim.media.progress.VideoProgress` per video as it decodes and encodes (seconds decoded of
    its duration, segments cut and encoded, ETA), ending with one marked ``done``; ``True``: a tqdm bar per
    video (:class:`~maxsim.media.progress.VideoProgressBar`).
    """

    needs_plan = False

    def __init__(self, encoder: Encoder, sampler: FrameSampler, dim: int, batch_size: int = 8,
                 isolate: bool = True, on_progress: ProgressCallback | bool | None = None) -> None:
        self.encoder = encoder
        self.on_progress: ProgressCallback | None = (
            VideoProgressBar() if on_progress is True else (on_progress or None))
        self.sampler = sampler
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.isolate = bool(isolate)
        if self.isolate:
            warm_up()  # its imports overlap the ingest's own start (lock, hashing)

    def plan(self, videos: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        """Close the progress display, if ``on_progress`` has one (a :class:`VideoProgressBar`)."""
        close = getattr(self.on_progress, "close", None)
        if callable(close):
            close()

    def __call__(self, video: str, digest: str, settings: str, segmenter: Segmenter
                 ) -> Iterator[SegmentRecord]:
        """The video's segments with their vectors, encoded ``batch_size`` clips at a time."""
        batch: list[tuple[Clip, bytes]] = []
        name = self.encoder.name
        tell = self.on_progress
        progress = VideoProgress(video) if tell is not None else None

        def flush() -> Iterator[SegmentRecord]:
            vecs = self.encoder.encode_clips([c for c, _ in batch])
            if len(vecs) != len(batch):
                raise EncoderOutputError(
                    f"encoder {name!r} returned {len(vecs)} outputs for {len(batch)} clips")
            for (clip, thumb), v in zip(batch, vecs, strict=True):
                v = check_vectors(v, self.dim, name, f"clip {clip.start:.2f}-{clip.end:.2f} s")
                grid = encoder_token_grid(self.encoder, clip, v.shape[0])
                yield SegmentRecord(
                    video=video, video_hash=digest, settings=settings, start=clip.start, end=clip.end,
                    frame_times=np.asarray(clip.timestamps, dtype=np.float32).tolist(), thumbnail=thumb,
                    tokens=v, token_grid=None if grid is None else grid.to_list(),
                )
            if progress is not None and tell is not None:
                progress.segments_encoded += len(batch)
                tell(progress)
            batch.clear()

        if self.isolate:
            clips = isolated_clips(video, segmenter, self.sampler, read_ahead=self.batch_size,
                                   progress=progress, on_progress=tell)
        else:
            clips = local_clips(video, segmenter, self.sampler, 8, progress, tell)
        try:
            for item in clips:
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield from flush()
            if batch:
                yield from flush()
            if progress is not None and tell is not None:
                progress.done = True
                tell(progress)
        finally:
            clips.close()


class Ingester:
    """Adds videos to the index in ``store`` (see the module docstring).

    ``after_commit(manifest)`` runs under the writer lock after each commit (the engine extends the prune
    index there); ``lock_timeout`` waits that long for another writer. With ``transcripts`` each video
    encoded also gets its transcript lines and their vectors (see :mod:`maxsim.transcripts.stage`), stored
    in the same part, owned by its first segment; a video whose sidecar subtitles changed since it was
    ingested is encoded again even when its own content did not change. A transcript that fails (an
    encoder error) fails the video like a decoding error: its rows are taken back.
    """

    def __init__(self, store: Store, settings: str, video_encoder: VideoEncoder, *, lock_timeout: float = 0.0,
                 after_commit: Callable[[Manifest], None] | None = None,
                 transcripts: TranscriptStage | None = None) -> None:
        self.transcripts = transcripts
        self.store = store
        self.settings = settings
        self.video_encoder = video_encoder
        self.lock_timeout = lock_timeout
        self.after_commit = after_commit

    def run(self, paths: str | os.PathLike | Iterable[str | os.PathLike], segmenter: Segmenter,
            report: IngestReport, progress: bool = True, commit_every: int | None = None) -> Manifest | None:
        """Ingest ``paths`` (files, or folders searched recursively) into ``report``; returns the manifest
        of the last version committed (None when nothing changed). See :meth:`maxsim.Engine.ingest`."""
        if commit_every is not None and commit_every < 1:
            raise ValueError(f"commit_every must be >= 1 or None, got {commit_every}")
        files, seen = [], set()
        for f in expand_paths(paths, report.failed):
            try:
                key = video_key(f)
            except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
                report.failed.append((f, f"cannot resolve path ({e})"))
                continue
            if key not in seen:
                seen.add(key)
                files.append((f, key))
        store, settings, encode = self.store, self.settings, self.video_encoder
        committed: Manifest | None = None
        with store.writing(wait=self.lock_timeout):
            base = store.manifest()
            catalog = store.catalog(base)
            decided: dict[str, tuple[str, str, tuple[int, int] | None, str | None]] = {}
            if encode.needs_plan:  # decided once, up front: the pipeline must know what it will be asked
                decided = {video: self._decide(video, catalog.get(video), settings) for _, video in files}
                encode.plan([video for video, (what, *_) in decided.items() if what == "encode"])
            writer = store.new_part(base)
            next_id = base.next_segment_id
            replaced: list[str] = []
            pending = 0  # videos in the part being written

            def commit() -> None:
                nonlocal base, catalog, writer, replaced, pending, committed
                part = writer.close()
                base = store.commit(
                    base, [part], delete_videos=replaced, next_segment_id=next_id, op="ingest",
                    info={"videos": pending, "videos_replaced": len(replaced)},
                    transcript=None if self.transcripts is None else self.transcripts.record(),
                )
                report.version = base.version
                committed = base
                catalog, replaced, pending = store.catalog(base), [], 0

            try:
                for f, video in tqdm(files, desc="ingest", unit="video", disable=not progress):
                    old = catalog.get(video)
                    what, digest, stat, subs = (decided.pop(video) if encode.needs_plan
                                                else self._decide(video, old, settings))
                    if what == "skip":
                        report.skipped.append((f, "already indexed with the same content and settings"))
                        continue
                    if what == "fail":
                        report.failed.append((f, digest))  # the reason the file could not be read
                        continue
                    mark = writer.mark()
                    n = 0
                    records = encode(video, digest, settings, segmenter)
                    try:
                        for rec in records:
                            writer.add(next_id, rec)
                            next_id += 1
                            n += 1
                        if self.transcripts is not None and n:
                            report.cues += self._add_transcript(writer, next_id - n, video)
                    except IndexError_:
                        raise  # the index itself cannot take writes: stop, nothing is committed
                    except Exception as e:  # bad input, or an encoder/segmenter failing on this video
                        writer.rollback(mark)  # its rows never become live
                        report.failed.append((f, failure_reason(e)))
                        continue
                    finally:
                        records.close()  # stops the video's decoder at once if it was abandoned
                    if stat is not None:
                        writer.note_file(video, size=stat[0], mtime_ns=stat[1])
                    if subs is not None:
                        writer.note_file(video, subtitles=subs)
                    if old is not None:
                        replaced.append(video)
                    report.ingested.append(f)
                    report.segments += n
                    pending += 1
                    if commit_every is not None and pending >= commit_every:
                        commit()
                        writer = store.new_part(base)
                if pending:
                    commit()
                else:
                    writer.abort()
            except BaseException:
                if not writer.closed:
                    writer.abort()
                raise
            finally:
                encode.close()
            if committed is not None and self.after_commit is not None:
                self.after_commit(committed)
        return committed

    def _decide(self, video: str, old: dict[str, Any] | None, settings: str
                ) -> tuple[str, str, tuple[int, int] | None, str | None]:
        """:func:`decide`, plus the fingerprint of the video's sidecar subtitles when transcripts are
        on: a video whose sidecars changed is encoded again."""
        what, digest, stat = decide(video, old, settings)
        subs = None if self.transcripts is None else self.transcripts.fingerprint(video)
        if self.transcripts is not None and what == "skip" and old.get("subtitles") != subs:
            what, digest = "encode", old["hash"]  # the same video; its subtitles changed
        return what, digest, stat, subs

    def _add_transcript(self, writer: Any, owner_id: int, video: str) -> int:
        """Gather and encode ``video``'s transcript into ``writer``, owned by segment ``owner_id``;
        returns the number of lines stored."""
        tr = self.transcripts.gather(video)
        if tr is None:
            return 0
        c = tr.cues
        writer.add_cues(owner_id, video, [x.start for x in c], [x.end for x in c], [x.text for x in c],
                        [x.speaker for x in c], tr.vectors)
        return len(c)
