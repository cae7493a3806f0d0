"""The engine: composes segmentation, frame sampling, encoding, the store and MaxSim scoring."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat as statmod
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maxsim import kernels
from maxsim.encoders import DEFAULT_ENCODER, load_encoder
from maxsim.frames import FrameSampler, iter_clips
from maxsim.pooling import PooledEncoder
from maxsim.rerank import DEFAULT_RERANKER, Reranker, RerankError, load_reranker, rerank_hits
from maxsim.segment import Segmenter, load_segmenter
from maxsim.store import (
    KEEP_VERSIONS,
    TARGET_PART_BYTES,
    CompactReport,
    EncoderMismatchError,
    IndexError_,
    IndexNotFoundError,
    Manifest,
    SegmentRecord,
    Snapshot,
    Store,
    storage_dtype,
)
from maxsim.types import Clip, Encoder, Hit
from maxsim.video import VideoError, content_hash

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
    version: int | None = None  # the index version committed, None when nothing changed

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
            "version": self.version,
        }

    def __str__(self) -> str:
        lines = [
            f"ingested {len(self.ingested)} file(s) ({self.segments} segments), "
            f"skipped {len(self.skipped)}, failed {len(self.failed)}"
        ]
        lines += [f"  skipped {p}: {r}" for p, r in self.skipped]
        lines += [f"  FAILED  {p}: {r}" for p, r in self.failed]
        return "\n".join(lines)


def video_key(path: str | os.PathLike) -> str:
    """The key a video has in the index: its absolute path with symlinks resolved."""
    return str(Path(path).resolve())


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


_HUB_COMMIT = re.compile(r"^[0-9a-f]{40}$")

# Encoder settings that change how fast vectors are computed, not which vectors come out (within float
# noise): left out of the settings key, so that opening an index on another device or with other batch
# sizes does not re-ingest it.
RUNTIME_ENCODER_SETTINGS = frozenset({"dtype", "device", "batch_tokens", "text_batch_size"})


def encoder_revision(encoder: Encoder) -> str | None:
    """The hub commit an encoder's checkpoint was loaded at (``encoder.revision``, else the 40-hex
    ``@<commit>`` that ends its name); None for local folders (their name holds a content fingerprint).
    A :class:`~maxsim.pooling.PooledEncoder` has the revision of the encoder it wraps."""
    if isinstance(encoder, PooledEncoder):
        return encoder_revision(encoder.inner)
    rev = getattr(encoder, "revision", None)
    if isinstance(rev, str) and _HUB_COMMIT.match(rev):
        return rev
    _, at, tail = str(encoder.name).rpartition("@")
    return tail if at and _HUB_COMMIT.match(tail) else None


def _vector_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Encoder settings without the runtime ones, at every level (a PooledEncoder nests its inner's)."""
    return {k: _vector_settings(v) if isinstance(v, dict) else v
            for k, v in settings.items() if k not in RUNTIME_ENCODER_SETTINGS}


def _encoder_record(encoder: Encoder, spec: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": encoder.name, "dim": int(encoder.dim)}
    if spec is not None:
        rec["spec"] = spec
        rev = encoder_revision(encoder)
        if rev is not None:  # reloading the spec must not follow the hub to a newer commit
            rec["revision"] = rev
    settings = getattr(encoder, "settings", None)
    if settings:
        rec["settings"] = settings
    return rec


class Engine:
    """A video moment index: ingest videos, then search them with text.

    ``Engine(path, encoder=...)`` opens the index at ``path`` or creates it there. ``encoder`` is an
    :class:`~maxsim.Encoder` or a spec (registered name, Hugging Face id or local folder,
    ``package.module:attr``). Without one, an existing index loads the encoder recorded in it when a
    text query first needs it. An open engine searches the version it opened until :meth:`refresh`.
    With ``create=False`` a missing index raises :class:`~maxsim.store.IndexNotFoundError`.
    ``version=N`` opens a retained past version, read-only. One process writes at a time: a write
    (ingest, delete, compact) while another process writes raises :class:`~maxsim.store.LockedError`,
    at once or after waiting ``lock_timeout`` seconds for it to finish.

    ``dtype`` is the storage dtype of a new index (an existing one keeps its own): ``float16`` (default),
    ``bfloat16``, ``float32``, or quantised ``int8`` / ``float8_e4m3fn`` (aliases fp16, bf16, fp32, fp8),
    which keep one float32 scale per token row and are scored on the stored bytes (no dequantised copy);
    their scores differ from float32 by about 2e-3 (int8) / 7e-3 (fp8) of the best score at most (see
    :mod:`maxsim.kernels.quantize`). Bytes per 128-d token: 256 (16-bit), 132 (int8 / fp8).

    The index records the encoder's name (its checkpoint and, for hub checkpoints, the commit loaded:
    reloading it from the record pins that commit), dim and settings. Opened with the same checkpoint but
    other encoder settings that change the vectors (e.g. a visual token budget), an engine searches as
    usual, and its next ingest re-encodes each video it is given instead of skipping it (the settings
    are part of each video's settings key); videos not re-ingested keep their old vectors.

    Token reduction at ingest: a spec followed by ``+pool(factor=2,dedup=0.95,window=1024)`` (see
    :func:`maxsim.pooling.split_pool_spec`), or a :class:`~maxsim.pooling.PooledEncoder` built on a spec
    (``PooledEncoder("colqwen3", factor=2)``). The index records the full spec, so ``Engine(path)`` reopens
    it with the same reduction, and an encoder with other reduction settings is refused (its name differs).
    A PooledEncoder wrapping an encoder object has no spec to record: reopen that index with ``encoder=``.

    Frames are sampled at the size the encoder wants (its ``frame_size``; e.g. ColQwen3's token budget)
    unless the sampler sets ``max_side``. ``reranker`` (a spec or an object, see
    :func:`maxsim.rerank.load_reranker`; default ``"qwen3-vl-reranker"``, loaded on first use) re-scores
    the top hits of ``search(..., rerank=N)``.
    """

    last_prune_stats: Any = None  # what the last pruned search read (maxsim.candidates.PruneStats)

    def __init__(
        self,
        path: str | os.PathLike,
        encoder: Encoder | str | None = None,
        *,
        dtype: str = "float16",
        segmenter: Segmenter | str = "fixed:10",
        sampler: FrameSampler | None = None,
        batch_size: int = 8,
        create: bool = True,
        version: int | None = None,
        lock_timeout: float = 0.0,
        reranker: Reranker | str | None = None,
    ) -> None:
        self.path = Path(path)
        self._reranker_spec = reranker
        self._reranker: Reranker | None = None
        dtype = storage_dtype(dtype)
        self._pinned = version
        self.lock_timeout = lock_timeout
        self.store = Store(self.path)
        self.segmenter = load_segmenter(segmenter)
        self.sampler = sampler or FrameSampler()
        self.batch_size = batch_size
        self._spec = encoder if isinstance(encoder, str) else None
        self._encoder: Encoder | None = None if encoder is None else load_encoder(encoder)
        if isinstance(self._encoder, PooledEncoder) and self._encoder.spec is not None:
            self._spec = self._encoder.spec  # "<inner spec>+pool(...)" in full, whichever way it was given
        try:
            manifest = self.store.manifest(version)
        except IndexNotFoundError:
            if not create or version is not None:
                raise
            if self._encoder is None:
                if DEFAULT_ENCODER is None:
                    raise IndexNotFoundError(
                        f"no index at {self.path}: pass encoder=... to create one there"
                    ) from None
                self._spec = DEFAULT_ENCODER
                self._encoder = load_encoder(DEFAULT_ENCODER)
            with contextlib.suppress(FileExistsError):  # another process created it meanwhile
                Store.create(self.path, _encoder_record(self._encoder, self._spec), self._encoder.dim, dtype)
            manifest = self.store.manifest()
        if self._encoder is not None:
            self._check_encoder(manifest, self._encoder)
        self._snapshot = self.store.snapshot(version)

    # -- state ---------------------------------------------------------------------------------------
    def _open(self, manifest: Manifest, made: Snapshot | None = None) -> None:
        """Search ``manifest``'s version from now on (``made``: a snapshot of it already opened)."""
        if made is not None and made.manifest.version == manifest.version:
            self._snapshot = made
        else:
            self._snapshot = Snapshot(self.path, manifest, self._snapshot)

    @property
    def manifest(self) -> Manifest:
        """The manifest of the version this engine searches."""
        return self._snapshot.manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    def refresh(self) -> int:
        """Move to the latest committed version; returns it. Searches until then use the version opened."""
        if self._pinned is not None:
            raise PermissionError(f"{self.path} is open at version {self._pinned}: it does not refresh")
        self._snapshot = self.store.snapshot(previous=self._snapshot)
        return self.version

    def __len__(self) -> int:
        return len(self._snapshot)

    def _check_encoder(self, manifest: Manifest, encoder: Encoder) -> None:
        rec = manifest.encoder
        if rec.get("name") != encoder.name or int(manifest.dim) != int(encoder.dim):
            raise EncoderMismatchError(
                f"{self.path} was built with encoder {rec.get('name')!r} (dim {manifest.dim}); "
                f"the encoder given is {encoder.name!r} (dim {encoder.dim}). Open it with the same "
                "encoder, or build a new index."
            )

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded from the index's record on first use when none was given."""
        if self._encoder is None:
            spec = self.manifest.encoder.get("spec")
            if spec is None:
                raise ValueError(
                    f"{self.path} does not record a loadable encoder spec "
                    f"(encoder {self.manifest.encoder.get('name')!r}): pass encoder=..."
                )
            rev = self.manifest.encoder.get("revision")
            enc = load_encoder(spec, **({"revision": rev} if rev else {}))
            self._check_encoder(self.manifest, enc)
            self._encoder, self._spec = enc, spec
        return self._encoder

    @property
    def reranker(self) -> Reranker:
        """The reranker of ``search(..., rerank=N)``, loaded on first use (see the class docstring); one
        whose weights or code cannot be had raises :class:`~maxsim.rerank.RerankError` saying why."""
        if self._reranker is None:
            try:
                self._reranker = load_reranker(self._reranker_spec)
            except (OSError, ImportError) as e:  # MissingWeightsError is an OSError
                spec = self._reranker_spec if isinstance(self._reranker_spec, str) else DEFAULT_RERANKER
                raise RerankError(f"re-ranking is not available: reranker {spec!r} cannot be loaded "
                                  f"({e})") from e
        return self._reranker

    @property
    def frame_sampler(self) -> FrameSampler:
        """The sampler ingest uses: :attr:`sampler` with its frames sized for the encoder (unless the
        sampler sets ``max_side``)."""
        return self.sampler.for_encoder(self.encoder)

    def _encoder_load_args(self) -> tuple[str, dict[str, Any]] | None:
        """The spec and :func:`~maxsim.encoders.load_encoder` kwargs that load this engine's encoder again
        in another process (a Ray worker): the spec it was loaded from (given, or the index's record),
        pinned at the hub commit it was loaded at, as a reopened index reloads its record. None for an
        encoder object that has no spec."""
        enc = self.encoder
        if self._spec is None:
            return None
        rev = encoder_revision(enc)
        return self._spec, ({"revision": rev} if rev else {})

    def videos(self) -> list[str]:
        """Paths of the videos in the index, sorted."""
        return sorted(self._catalog(self.manifest))

    # -- ingest --------------------------------------------------------------------------------------
    def _settings_key(self, segmenter: Segmenter) -> str:
        """What a video's vectors depend on besides its content: a video indexed under another key is
        re-encoded by the next ingest (e.g. after opening the index with another frame sampler or with
        encoder settings that change the vectors, such as a visual token budget)."""
        key: dict[str, Any] = {"segmenter": segmenter.name, "sampler": self.frame_sampler.name,
                               "encoder": self.encoder.name}
        enc_settings = _vector_settings(getattr(self.encoder, "settings", None) or {})
        if enc_settings:
            key["encoder_settings"] = enc_settings
        return json.dumps(key, sort_keys=True, default=str)

    def ingest(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        segmenter: Segmenter | str | None = None,
        progress: bool = True,
        commit_every: int | None = None,
        ray: bool = False,
        ray_workers: int = 2,
    ) -> IngestReport:
        """Add videos (files or folders searched recursively; one path or several) in one commit.

        A video already indexed with the same content and settings is skipped; a changed one replaces
        its old segments in the same commit. A file whose size and modification time (ns) match those
        recorded at its ingest is taken as unchanged without reading it; otherwise its content hash
        decides (so do files modified less than 2 s before they were ingested, whose time may not move
        on a quick rewrite, and indexes written before these were recorded). A file that cannot be read
        (or whose vectors the encoder gets wrong) is reported in ``failed`` with the reason and leaves the
        index unchanged for it; the other files still ingest. Segments are written to the new part as
        they are encoded, so memory holds one encoder batch of clips and one record batch of vectors,
        whatever the video's length.
        Killed at any point, the index stays at its last committed version. With ``commit_every=N`` a
        version is committed after every N ingested videos (a long ingest that is interrupted then keeps
        what it committed; ``report.version`` is the last version committed).

        With ``ray=True`` decoding, segmentation and frame sampling run as a Ray Data pipeline and
        encoding in a pool of ``ray_workers`` actors (one GPU each when the cluster has GPUs); this
        process writes the part and commits, exactly as without Ray (see :mod:`maxsim.distributed`).
        """
        self._writable("ingest")
        if commit_every is not None and commit_every < 1:
            raise ValueError(f"commit_every must be >= 1 or None, got {commit_every}")
        seg = self.segmenter if segmenter is None else load_segmenter(segmenter)
        settings = self._settings_key(seg)
        report = IngestReport()
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
        with self.store.writing(wait=self.lock_timeout):
            base = self.store.manifest()
            catalog = self._catalog(base)
            encode = self._encode_video
            ray_encoder = None
            decided: dict[str, tuple[str, str, tuple[int, int] | None]] = {}
            if ray:  # set up before the part is opened (its pipeline starts with the first video read)
                from maxsim.distributed import RayVideoEncoder

                # decided once, up front: the pipeline must know the videos it will be asked for
                decided = {video: self._decide(video, catalog.get(video), settings) for _, video in files}
                todo = [video for video, (what, *_) in decided.items() if what == "encode"]
                encode = ray_encoder = RayVideoEncoder(self, todo, seg, settings, num_workers=ray_workers)
            writer = self.store.new_part(base)
            next_id = base.next_segment_id
            replaced: list[str] = []
            pending = 0  # videos in the part being written

            def commit() -> None:
                nonlocal base, catalog, writer, replaced, pending
                part = writer.close()
                base = self.store.commit(
                    base, [part], delete_videos=replaced, next_segment_id=next_id, op="ingest",
                    info={"videos": pending, "videos_replaced": len(replaced)},
                )
                report.version = base.version
                catalog, replaced, pending = self._catalog(base), [], 0

            try:
                for f, video in tqdm(files, desc="ingest", unit="video", disable=not progress):
                    old = catalog.get(video)
                    what, digest, stat = (decided.pop(video) if ray else
                                          self._decide(video, old, settings))
                    if what == "skip":
                        report.skipped.append((f, "already indexed with the same content and settings"))
                        continue
                    if what == "fail":
                        report.failed.append((f, digest))  # the reason the file could not be read
                        continue
                    mark = writer.mark()
                    n = 0
                    records = encode(video, digest, settings, seg)
                    try:
                        for rec in records:
                            writer.add(next_id, rec)
                            next_id += 1
                            n += 1
                    except IndexError_:
                        raise  # the index itself cannot take writes: stop, nothing is committed
                    except Exception as e:  # bad input, or an encoder/segmenter failing on this video
                        writer.rollback(mark)  # its rows never become live
                        report.failed.append((f, _failure_reason(e)))
                        continue
                    finally:
                        records.close()  # stops the video's decoder at once if it was abandoned
                    if stat is not None:
                        writer.note_file(video, size=stat[0], mtime_ns=stat[1])
                    if old is not None:
                        replaced.append(video)
                    report.ingested.append(f)
                    report.segments += n
                    pending += 1
                    if commit_every is not None and pending >= commit_every:
                        commit()
                        writer = self.store.new_part(base)
                if pending:
                    commit()
                else:
                    writer.abort()
            except BaseException:
                if not writer.closed:
                    writer.abort()
                raise
            finally:
                if ray_encoder is not None:
                    ray_encoder.close()
            made = self._maintain_prune(progress) if report.version is not None else None
        if report.version is not None:
            self._open(base, made)
        return report

    @staticmethod
    def _decide(video: str, old: dict[str, Any] | None, settings: str
                ) -> tuple[str, str, tuple[int, int] | None]:
        """What to do with ``video`` given its catalog entry ``old``: ``("skip", "", stat)`` when it is
        indexed with these settings and its size and time (not read again) or content are the same,
        ``("fail", reason, stat)`` when it cannot be read, else ``("encode", content hash, stat)``. The
        stat is taken before hashing, so a later change shows as a new stat."""
        stat = _file_stat(video)
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

    def _catalog(self, manifest: Manifest) -> dict[str, dict[str, Any]]:
        """video path -> catalog entry (hash, settings, id ranges, counts) of a version."""
        if manifest.videos is None:  # an index from before the catalog: built from its segment tables
            return Snapshot(self.path, manifest, self._snapshot).manifest.videos or {}
        return manifest.videos

    def _encode_video(
        self, video: str, digest: str, settings: str, seg: Segmenter
    ) -> Iterator[SegmentRecord]:
        """The video's segments with their vectors, encoded ``batch_size`` clips at a time."""
        batch: list[tuple[Clip, bytes]] = []

        def flush() -> Iterator[SegmentRecord]:
            vecs = self.encoder.encode_clips([c for c, _ in batch])
            if len(vecs) != len(batch):
                raise EncoderOutputError(
                    f"encoder {self.encoder.name!r} returned {len(vecs)} outputs for {len(batch)} clips"
                )
            for (clip, thumb), v in zip(batch, vecs, strict=True):
                yield SegmentRecord(
                    video=video,
                    video_hash=digest,
                    settings=settings,
                    start=clip.start,
                    end=clip.end,
                    frame_times=np.asarray(clip.timestamps, dtype=np.float32).tolist(),
                    thumbnail=thumb,
                    tokens=self._check_vectors(v, f"clip {clip.start:.2f}-{clip.end:.2f} s"),
                )
            batch.clear()

        clips = iter_clips(video, seg, self.frame_sampler)
        try:
            for item in clips:
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield from flush()
            if batch:
                yield from flush()
        finally:
            clips.close()

    def _check_vectors(self, v: Any, what: str) -> torch.Tensor:
        dim = self.manifest.dim
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[1] != dim:
            shape = tuple(v.shape) if hasattr(v, "shape") else type(v).__name__
            raise EncoderOutputError(
                f"encoder {self.encoder.name!r} returned {shape} for {what}; expected (n_tokens, {dim})"
            )
        if v.shape[0] == 0:
            raise EncoderOutputError(f"encoder {self.encoder.name!r} returned no token for {what}")
        v = v.detach().float().cpu()
        if not bool(torch.isfinite(v).all()):
            raise EncoderOutputError(f"encoder {self.encoder.name!r} returned NaN or inf values for {what}")
        return v

    # -- delete, compact, versions -------------------------------------------------------------------
    def delete(self, video: str | os.PathLike) -> int:
        """Remove a video's segments from the index in one commit; returns how many were removed.

        Costs O(segments of that video): the catalog gives its segment ids, which are tombstoned; no
        segment table or token data is read or rewritten (:meth:`compact` reclaims the space).
        """
        path = video_key(video)
        removed = self.delete_where(videos=[path])
        if not removed:
            raise KeyError(f"video {str(video)!r} is not in the index at {self.path}")
        return removed[path]

    def delete_where(
        self,
        prefix: str | os.PathLike | None = None,
        *,
        videos: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        match: Callable[[str], bool] | None = None,
    ) -> dict[str, int]:
        """Remove every video that matches, in one commit; returns ``{video path: segments removed}``.

        ``prefix``: a folder (or path) whose videos go: paths equal to it or under it (compared on
        whole path components after resolving it, so ``/data/cam1`` does not match ``/data/cam10``).
        ``videos``: one path or several to remove (those not in the index are ignored). ``match``: a
        predicate on the stored (absolute) path. Given several, a video matching any goes. Nothing
        matching: no commit.
        """
        self._writable("delete")
        if prefix is None and videos is None and match is None:
            raise ValueError("delete_where needs prefix=, videos= or match=")
        root = None if prefix is None else video_key(prefix)
        wanted = None
        if videos is not None:
            videos = [str(v) for v in _as_list(videos)]
            wanted = {video_key(v) for v in videos} | set(videos)
        with self.store.writing(wait=self.lock_timeout):
            base = self.store.manifest()
            catalog = self._catalog(base)
            doomed = {}
            for v, entry in catalog.items():
                if (
                    (root is not None and (v == root or v.startswith(root.rstrip(os.sep) + os.sep)))
                    or (wanted is not None and v in wanted)
                    or (match is not None and match(v))
                ):
                    doomed[v] = int(entry["segments"])
            if not doomed:
                return {}
            man = self.store.commit(
                base, delete_videos=list(doomed), op="delete",
                info={"videos": sorted(doomed)[:20], "segments_deleted": sum(doomed.values())},
            )
        self._open(man)
        return doomed

    def compact(
        self,
        *,
        full: bool = False,
        target_part_bytes: int = TARGET_PART_BYTES,
        min_dead_fraction: float = 0.1,
        keep_versions: int = KEEP_VERSIONS,
        progress: bool = False,
    ) -> CompactReport:
        """Merge small parts and drop deleted segments, committed as one new version; then collect garbage.

        Online: other engines and readers keep searching the version they opened. Files of the last
        ``keep_versions`` versions are kept (so those versions stay openable with ``version=``); older
        ones are removed. See :meth:`maxsim.store.Store.compact` for which parts are rewritten.
        """
        self._writable("compact")
        with self.store.writing(wait=self.lock_timeout):
            rep = self.store.compact(target_part_bytes=target_part_bytes, min_dead_fraction=min_dead_fraction,
                                     full=full, keep_versions=keep_versions, progress=progress)
            man = self.store.manifest()
            made = self._maintain_prune(progress)
        self._open(man, made)
        return rep

    def versions(self) -> list[int]:
        """The versions of the index that can still be opened with ``Engine(path, version=N)``."""
        return self.store.versions()

    @property
    def history(self) -> list[dict[str, Any]]:
        """The commits up to the version this engine searches: version, time, operation, counts."""
        return list(self.manifest.history)

    def _writable(self, what: str) -> None:
        if self._pinned is not None:
            raise PermissionError(
                f"{self.path} is open read-only at version {self._pinned}: cannot {what}; open it without "
                "version= to write"
            )

    # -- search --------------------------------------------------------------------------------------
    def search(
        self,
        text: str,
        k: int = 10,
        videos: Sequence[str] | None = None,
        time_range: tuple[float, float] | None = None,
        thumbnails: bool = True,
        rerank: int = 0,
        **options: Any,
    ) -> list[Hit]:
        """The k segments that best match ``text``, best first.

        ``thumbnails=False`` leaves ``Hit.thumbnail`` None (the JPEG bytes are then never read).
        ``rerank=N`` re-scores the best N hits (at least k) with :attr:`reranker` (their frames decoded
        again from the videos, by the frame times the index keeps) and returns the best k of those by the
        rerank score; each hit's ``scores`` holds ``"maxsim"`` and ``"rerank"``, ``score`` the rerank one.
        A video file that is gone raises :class:`~maxsim.rerank.RerankError` naming it.
        ``mode="exact"`` (default) scores every segment. ``mode="pruned"`` scores exactly only
        ``n_candidates`` segments, the best of ``n_refine`` scored from the prune index's residual codes,
        themselves picked with its token centroids (see :meth:`build_prune_index`; ``nprobe`` centroids
        per query token; ``n_refine=0`` skips the residual stage). Parts without a prune index are
        scored exhaustively, so a pruned search is never wrong, only slower, before it is built.
        """
        return self.search_batch([text], k=k, videos=videos, time_range=time_range, thumbnails=thumbnails,
                                 rerank=rerank, **options)[0]

    def search_batch(
        self,
        texts: Sequence[str],
        k: int = 10,
        videos: Sequence[str] | None = None,
        time_range: tuple[float, float] | None = None,
        thumbnails: bool = True,
        rerank: int = 0,
        **options: Any,
    ) -> list[list[Hit]]:
        """:meth:`search` for several texts at once (one pass over the index; each text re-ranked on its
        own)."""
        if isinstance(texts, str):
            raise TypeError("search_batch takes a list of texts; use search() for one")
        if isinstance(rerank, bool) or not isinstance(rerank, int) or rerank < 0:
            raise ValueError(f"rerank must be a non-negative integer (hits re-scored), got {rerank!r}")
        if not texts:
            return []
        results = self.search_vectors(self.encoder.encode_texts(list(texts)), max(k, rerank), videos,
                                      time_range, thumbnails=thumbnails, **options)
        if not rerank:
            return results
        reranker = self.reranker
        return [rerank_hits(text, hits, reranker, k=k) for text, hits in zip(texts, results, strict=True)]

    def search_vectors(
        self,
        queries: Sequence[torch.Tensor],
        k: int = 10,
        videos: Sequence[str] | None = None,
        time_range: tuple[float, float] | None = None,
        thumbnails: bool = True,
        *,
        mode: str = "exact",
        n_candidates: int | None = None,
        nprobe: int = 8,
        n_refine: int | None = None,
    ) -> list[list[Hit]]:
        """Search with precomputed query multi-vectors, each ``(n_tokens, dim)``; see :meth:`search`."""
        snap = self._snapshot
        q, q_off = self._queries(queries)
        best_s, best_r = self._search_rows(snap, q, q_off, k, videos, time_range, mode, n_candidates, nprobe,
                                           n_refine)
        return [
            self._hits(snap, q[int(q_off[i]) : int(q_off[i + 1])], best_s[i], best_r[i], thumbnails)
            for i in range(len(queries))
        ]

    def _queries(self, queries: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.manifest.dim
        for i, q in enumerate(queries):
            if q.ndim != 2 or q.shape[1] != dim:
                raise ValueError(f"query {i} has shape {tuple(q.shape)}; expected (n_tokens, {dim})")
        q = torch.cat([q.detach().float().cpu() for q in queries])
        q_off = torch.zeros(len(queries) + 1, dtype=torch.int64)
        q_off[1:] = torch.cumsum(torch.tensor([x.shape[0] for x in queries]), 0)
        return q, q_off

    def _search_rows(
        self, snap: Snapshot, q: torch.Tensor, q_off: torch.Tensor, k: int, videos, time_range,
        mode: str = "exact", n_candidates: int | None = None, nprobe: int = 8, n_refine: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top k (scores, table rows) of each query in ``snap``, ``(n_q, k)``; rows -1 past the end."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if mode not in ("exact", "pruned"):
            raise ValueError(f"mode must be 'exact' or 'pruned', got {mode!r}")
        allowed = self._allowed(snap, videos, time_range)
        n_q = q_off.numel() - 1
        if mode == "pruned":
            n_allowed = int(allowed.sum())
            if n_candidates is None:
                n_candidates = default_candidates(k, n_allowed)
            if n_refine is None:
                n_refine = default_refine(k, n_allowed)
            s, r, self.last_prune_stats = self._pruner(snap).search(
                q, q_off, allowed, k, n_candidates=max(n_candidates, k), nprobe=nprobe, n_refine=n_refine
            )
            return s, r
        best_s = torch.full((n_q, k), float("-inf"))  # -inf / -1 past the allowed segments
        best_r = torch.full((n_q, k), -1, dtype=torch.int64)
        for ch in snap.chunks:
            ok = allowed[ch.rows]
            if not ok.any():
                continue
            s, r = self._score_chunk(q, q_off, ch, ok, k)
            best_s, best_r = kernels.merge_topk(torch.cat([best_s, s], 1), torch.cat([best_r, r], 1), k)
        return best_s, best_r

    def _pruner(self, snap: Snapshot):
        from maxsim.candidates import PrunedSearcher, prune_stamp

        cached = getattr(self, "_pruned_searcher", None)
        if cached is None or cached.snap is not snap or cached.stamp != prune_stamp(self.path):
            cached = PrunedSearcher(snap)
            self._pruned_searcher = cached
        return cached

    # -- pruning index -------------------------------------------------------------------------------
    def build_prune_index(
        self, n_centroids: int | None = None, iters: int = 4, progress: bool = True, nbits: int | None = 2,
        rebuild: bool = False, device: str | None = None,
    ) -> list[str]:
        """Build the prune index used by ``search(..., mode="pruned")`` (token centroids, inverted lists
        and ``nbits``-bit residual codes of every token; ``nbits=None``: no residual codes) for every
        part that lacks one, or for every part with ``rebuild``; returns the part ids built. Once built,
        ingest and compaction keep it up to date (new parts get their own centroids, lists and codes;
        nothing is rebuilt when videos are added). ``device`` runs k-means and the token assignment
        there (default: the CPU; ``"cuda"`` on a GPU machine)."""
        from maxsim.candidates import update_prune_index

        self._writable("build a prune index")
        with self.store.writing(wait=self.lock_timeout):
            built = update_prune_index(self.store.snapshot(previous=self._snapshot), n_centroids=n_centroids,
                                       iters=iters, progress=progress, nbits=nbits, rebuild=rebuild,
                                       device=device)
        return built

    def _maintain_prune(self, progress: bool) -> Snapshot | None:
        """Under the writer lock, after a commit: extend an existing prune index to new parts. Returns the
        snapshot of the latest version it opened to do so (None when the index has no prune index)."""
        from maxsim.candidates import read_prune_manifest, update_prune_index

        man = read_prune_manifest(self.path)
        if man is None:
            return None
        p = man.get("params", {})
        snap = self.store.snapshot(previous=self._snapshot)
        update_prune_index(snap, n_centroids=p.get("n_centroids"), iters=p.get("iters", 4),
                           seed=p.get("seed", 0), progress=progress, nbits=p.get("nbits", 2))
        return snap

    @staticmethod
    def _allowed(snap: Snapshot, videos: Sequence[str] | None, time_range) -> np.ndarray:
        allowed = snap.live.copy()
        if videos is not None:
            videos = _as_list(videos)
            wanted = {video_key(v) for v in videos} | {str(v) for v in videos}
            allowed &= snap.rows_of(wanted)
        if time_range is not None:
            lo, hi = time_range
            if hi < lo:
                raise ValueError(f"time_range end {hi} is before its start {lo}")
            allowed &= (snap.ends > lo) & (snap.starts < hi)
        return allowed

    def _score_chunk(self, q, q_off, ch, ok: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top k table rows of one chunk among the allowed ones: (scores, rows)."""
        n_excluded = int((~ok).sum())
        if n_excluded == 0 or n_excluded <= k:
            kk = min(k + n_excluded, len(ok))
            s, idx = kernels.maxsim_topk(q, q_off, ch.tokens, ch.offsets, kk, d_scale=ch.scales)
            rows = torch.from_numpy(ch.rows)[idx.clamp(min=0)]
            keep = torch.from_numpy(ok)[idx.clamp(min=0)] & (idx >= 0)
            s = torch.where(keep, s, torch.tensor(float("-inf")))
            rows = torch.where(keep, rows, torch.tensor(-1))
            return s, rows
        sel = np.flatnonzero(ok)
        starts, ends = ch.offsets[sel], ch.offsets[sel + 1]
        counts = ends - starts
        tok_idx = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts) + torch.arange(
            int(counts.sum())
        )
        d = ch.tokens[tok_idx]
        d_scale = None if ch.scales is None else ch.scales[tok_idx]
        d_off = torch.zeros(sel.size + 1, dtype=torch.int64)
        d_off[1:] = torch.cumsum(counts, 0)
        s, idx = kernels.maxsim_topk(q, q_off, d, d_off, min(k, sel.size), d_scale=d_scale)
        rows = torch.from_numpy(ch.rows[sel])[idx.clamp(min=0)]
        return s, torch.where(idx >= 0, rows, torch.tensor(-1))

    def _hits(
        self, snap: Snapshot, q: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor, thumbnails: bool
    ) -> list[Hit]:
        t = snap.table
        hits = []
        for s, r in zip(scores.tolist(), rows.tolist(), strict=True):
            if r < 0 or not math.isfinite(s):
                continue
            times = t.column("frame_times")[r].as_py() or []
            start, end = t.column("start")[r].as_py(), t.column("end")[r].as_py()
            hits.append(
                Hit(
                    video=t.column("video")[r].as_py(),
                    start=start,
                    end=end,
                    score=float(s),
                    segment_id=int(snap.segment_ids[r]),
                    best_time=_best_time(q, snap.segment_tokens(r), times, start, end),
                    thumbnail=t.column("thumbnail")[r].as_py() if thumbnails else None,
                    scores={"maxsim": float(s)},
                    frame_times=tuple(float(x) for x in times),
                )
            )
        return hits


# A file modified less than this before its stat may change again within the same timestamp tick (file
# systems keep coarse times: jiffies, 2 s on FAT) without its mtime moving: its stat is not trusted.
_RACY_NS = 2_000_000_000


def _file_stat(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file whose stat can vouch for its content later; else None."""
    try:
        now = time.time_ns()
        st = os.stat(path)
    except OSError:
        return None
    if not statmod.S_ISREG(st.st_mode) or st.st_mtime_ns > now - _RACY_NS:
        return None  # None: hashed every time (a file still being written is never skipped by its stat)
    return int(st.st_size), int(st.st_mtime_ns)


def _failure_reason(e: Exception) -> str:
    """What to tell the user about a video that failed to ingest."""
    if isinstance(e, VideoError):
        return e.reason
    if isinstance(e, EncoderOutputError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def default_candidates(k: int, n_allowed: int) -> int:
    """Candidates re-ranked exactly by a pruned search by default: 0.1% of the segments, at least 100 k."""
    return max(100 * k, n_allowed // 1000)


def default_refine(k: int, n_allowed: int) -> int:
    """Segments scored from residual codes by a pruned search by default: 10% of the segments, at least
    1000 k."""
    return max(1000 * k, n_allowed // 10)


class EncoderOutputError(ValueError):
    """An encoder returned vectors the index cannot take (wrong shape, none, NaN or inf)."""


def _best_time(q: torch.Tensor, d: torch.Tensor, times: list[float], start: float, end: float) -> float:
    """Frame time of the segment token that contributes most to the MaxSim score.

    Each query token picks its best segment token; the token with the largest summed contribution wins.
    Tokens map to frames in order (an encoder emits a clip's tokens frame by frame).
    """
    if not times or d.shape[0] == 0:
        return float(start + end) / 2
    sim = q @ d.float().T  # (n_q_tok, n_tok)
    val, arg = sim.max(1)
    contrib = torch.zeros(d.shape[0]).index_add_(0, arg, val)
    j = int(contrib.argmax())
    frame = min(len(times) - 1, j * len(times) // d.shape[0])
    return float(times[frame])
