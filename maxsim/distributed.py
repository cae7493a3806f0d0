"""Ray: ingest as a Ray Data pipeline, and search sharded over Ray actors.

Install with ``pip install "maxsim[ray]"``. The same code runs on a laptop (a local Ray started on first
use, or ``init(num_cpus=...)``) and on a cluster (``init(address="ray://...")`` or ``RAY_ADDRESS``).

Ingest (``Engine.ingest(paths, ray=True)`` / ``maxsim ingest --ray``):

1. a CPU stage (``flat_map``, one task per video): decode once, segment, sample frames
   (:func:`maxsim.frames.iter_clips`), one row per clip with its frames and thumbnail;
2. an encoder actor pool (``map_batches`` with ``concurrency=num_workers``): each actor loads the
   engine's encoder once (a GPU per actor when the cluster has GPUs) and encodes batches of clips. It
   loads it from the engine's spec at the hub revision the engine's encoder was loaded at (an encoder
   object without a spec is pickled to it), and refuses to encode when what it loaded differs in name,
   dim or vector settings: the ingest then raises :class:`~maxsim.store.EncoderMismatchError`;
3. the calling process consumes the rows in input order and writes them into one new part, with the
   same skip / replace / rollback rules and the one commit of a plain ingest, so the index it makes is
   the one a single-process ingest makes.

Search (:class:`ShardedSearch`): the parts of one index version are split over actors (each on its own
GPU where there are several); each actor returns its top k rows and the caller merges them by score,
then by table row, exactly as the single-process engine orders its hits.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from maxsim.store import EncoderMismatchError, SegmentRecord
from maxsim.types import Clip
from maxsim.video import VideoError

if TYPE_CHECKING:
    from maxsim.types import Hit


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('Ray is not installed: pip install "maxsim[ray]"') from e
    return ray


def init(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start or join Ray once: ``address`` (or ``RAY_ADDRESS``) joins a cluster, else a local Ray starts."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **kwargs}
    if address is None and num_cpus is not None:
        kw["num_cpus"] = num_cpus
    ray.init(address=address, **kw)


def _gpus_per_worker() -> float:
    ray = _ray()
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


# -- ingest -----------------------------------------------------------------------------------------------
class _ClipRows:
    """CPU stage: one video path in, its clips out (frames as raw bytes), then an end or error row."""

    def __init__(self, segmenter: Any, sampler: Any) -> None:
        self.segmenter = segmenter
        self.sampler = sampler

    def __call__(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from maxsim.frames import iter_clips

        video = row["video"]
        base = {"video": video, "kind": "clip", "reason": "", "start": 0.0, "end": 0.0, "frames": b"",
                "shape": [0, 0, 0, 0], "timestamps": [], "thumbnail": b""}
        try:
            for clip, thumb in iter_clips(video, self.segmenter, self.sampler.fresh()):
                frames = np.ascontiguousarray(clip.frames, dtype=np.uint8)
                yield {**base, "start": float(clip.start), "end": float(clip.end), "frames": frames.tobytes(),
                       "shape": list(frames.shape), "thumbnail": thumb or b"",
                       "timestamps": np.asarray(clip.timestamps, dtype=np.float64).tolist()}
        except VideoError as e:
            yield {**base, "kind": "error", "reason": e.reason}
            return
        yield {**base, "kind": "end"}


def worker_encoder(engine: Any) -> dict[str, Any]:
    """The constructor kwargs of an encoder actor, so that it encodes with exactly ``engine``'s encoder.

    With a spec (given to the engine, or the index's record it was loaded from): that spec and the
    ``load_encoder`` kwargs the engine's own reload passes, i.e. the hub revision the engine's encoder
    was loaded at, so a worker never follows the hub to a newer commit. An encoder object without a spec
    is pickled to the workers as it is. ``expect`` is what the worker's encoder must match (name, dim and
    the settings that change vectors); device and dtype are left to each worker (a GPU when it has one),
    as they are to any process opening the index."""
    from maxsim.engine import _vector_settings

    enc = engine.encoder
    how = engine._encoder_load_args()
    spec, kwargs = how if how is not None else (enc, {})
    expect = {"name": str(enc.name), "dim": int(enc.dim),
              "settings": _vector_settings(getattr(enc, "settings", None) or {})}
    return {"encoder": spec, "load_kwargs": kwargs, "expect": expect}


class _EncodeBatch:
    """Encoder actor: loads the encoder once, encodes the clip rows of each batch.

    When the encoder it loads is not the one expected (another checkpoint or commit, other settings), it
    encodes nothing: each clip row comes back as ``encoder_mismatch`` with the reason, and the ingest
    stops with :class:`~maxsim.store.EncoderMismatchError` before committing anything."""

    def __init__(self, encoder: Any, load_kwargs: dict[str, Any] | None = None,
                 expect: dict[str, Any] | None = None) -> None:
        from maxsim.encoders import load_encoder

        if not isinstance(encoder, str) and not hasattr(encoder, "encode_clips"):
            encoder = _ray().get(encoder)  # an encoder object the driver put in the object store
        kwargs = dict(load_kwargs or {})
        self.encoder = load_encoder(encoder, **kwargs)
        self.mismatch = "" if expect is None else _mismatch(self.encoder, expect, encoder, kwargs)

    def __call__(self, batch: Any) -> Any:
        rows = batch.to_dict("records")
        clips = [
            Clip(r["video"], r["start"], r["end"],
                 np.frombuffer(r["frames"], dtype=np.uint8).reshape([int(x) for x in r["shape"]]),
                 np.asarray(r["timestamps"], dtype=np.float64))
            for r in rows if r["kind"] == "clip"
        ]
        vecs = self.encoder.encode_clips(clips) if clips and not self.mismatch else []
        bad = len(vecs) != len(clips)
        out, j = [], 0
        for r in rows:
            o = {k: r[k] for k in ("video", "kind", "reason", "start", "end", "timestamps", "thumbnail")}
            o["tokens"], o["n_tokens"], o["dim"] = b"", 0, 0
            if r["kind"] == "clip":
                if self.mismatch:
                    o["kind"], o["reason"] = "encoder_mismatch", self.mismatch
                elif bad:
                    o["kind"] = "encoder_error"
                    o["reason"] = (f"encoder {self.encoder.name!r} returned {len(vecs)} outputs for "
                                   f"{len(clips)} clips")
                else:
                    v = vecs[j]
                    if isinstance(v, torch.Tensor) and v.ndim == 2:
                        t = v.detach().float().cpu().contiguous()
                        o["tokens"], o["n_tokens"], o["dim"] = t.numpy().tobytes(), t.shape[0], t.shape[1]
                    else:
                        o["kind"] = "encoder_error"
                        o["reason"] = f"encoder {self.encoder.name!r} returned {type(v).__name__} for a clip"
                j += 1
            out.append(o)
        import pandas as pd

        return pd.DataFrame(out)


def _mismatch(enc: Any, expect: dict[str, Any], source: Any, kwargs: dict[str, Any]) -> str:
    """Why the encoder a worker loaded is not the driver's (``expect``); "" when it is."""
    from maxsim.engine import _vector_settings

    got = {"name": str(enc.name), "dim": int(enc.dim),
           "settings": _vector_settings(getattr(enc, "settings", None) or {})}
    diff = [f"{k} {got[k]!r} (expected {expect.get(k)!r})" for k in ("name", "dim", "settings")
            if got[k] != expect.get(k)]
    if not diff:
        return ""
    what = source if isinstance(source, str) else type(source).__name__
    at = f" at revision {kwargs['revision']}" if kwargs.get("revision") else ""
    return (f"a Ray worker loaded encoder {what!r}{at} with {'; '.join(diff)}: the workers must load the "
            "same checkpoint as this process (same hub commit in their cache, same local folder, same "
            "package version)")


def _put_encoder(ray: Any, encoder: Any) -> Any:
    """An encoder object without a spec, pickled once into Ray's object store for the actors."""
    try:
        return ray.put(encoder)
    except (TypeError, pickle.PicklingError) as e:
        cause = e.__cause__ or e
        raise TypeError(
            f"encoder {getattr(encoder, 'name', '?')!r} ({type(encoder).__name__}) has no spec and cannot be "
            f"pickled to the Ray workers ({type(cause).__name__}: {str(cause).splitlines()[0]}); give the "
            "engine a spec (registered name, Hugging Face id, local folder or package.module:attr) or make "
            "the encoder picklable"
        ) from e


class RayVideoEncoder:
    """Encodes a list of videos through a Ray Data pipeline; ``Engine.ingest`` asks it for each video's
    segment records in turn (in the list's order), as it would ask its own encoder."""

    _unfinished: str | None = None  # a video whose rows were not all read (it failed midway)

    def __init__(self, engine: Any, videos: Sequence[str], segmenter: Any, settings: str,
                 num_workers: int = 2) -> None:
        ray = _ray()
        init()
        if num_workers < 1:
            raise ValueError(f"ray_workers must be at least 1, got {num_workers}")
        self.engine = engine
        self.videos = list(videos)
        # actors load the engine's encoder from its spec at its pinned revision (an encoder object
        # without a spec is pickled to them), and check it is the engine's
        actor_kwargs = worker_encoder(engine)
        if not isinstance(actor_kwargs["encoder"], str):
            actor_kwargs["encoder"] = _put_encoder(ray, actor_kwargs["encoder"])
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order: same index
        try:
            ctx.enable_progress_bars = False
        except AttributeError:  # pragma: no cover - older Ray
            pass
        self._stream: Iterator[dict[str, Any]] | None = None
        if self.videos:
            ds = ray.data.from_items([{"video": v} for v in self.videos],
                                     override_num_blocks=len(self.videos))
            # CPUs: the encoder actors hold theirs for the whole ingest, so leave at least one to decode
            cpus = float(ray.cluster_resources().get("CPU", 1))
            actor_cpus = max(0.1, min(1.0, (cpus - 1) / num_workers))
            rows = _ClipRows(segmenter, engine.frame_sampler)
            ds = ds.flat_map(rows, num_cpus=min(1.0, max(0.1, cpus - 1)))
            ds = ds.map_batches(
                _EncodeBatch, fn_constructor_kwargs=actor_kwargs, batch_size=engine.batch_size,
                batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=num_workers),
                num_gpus=_gpus_per_worker(),
                num_cpus=actor_cpus,
            )
            self._stream = iter(ds.iter_rows())
        self._next = 0

    def _skip_unfinished(self) -> None:
        """Drop the rest of the rows of a video that failed midway, up to its last row."""
        video, self._unfinished = self._unfinished, None
        if video is None:
            return
        assert self._stream is not None
        for row in self._stream:
            if row["video"] != video:
                raise RuntimeError(f"Ray pipeline returned a row of {row['video']} while skipping {video}")
            if row["kind"] in ("end", "error"):
                return

    def __call__(self, video: str, digest: str, settings: str, seg: Any) -> Iterator[SegmentRecord]:
        """The segment records of ``video``, which must be the next video of the list."""
        from maxsim.engine import EncoderOutputError

        if self._next >= len(self.videos) or self.videos[self._next] != video:
            raise RuntimeError(f"{video}: asked out of order from the Ray pipeline (expected "
                               f"{self.videos[self._next] if self._next < len(self.videos) else 'none'})")
        self._next += 1
        self._skip_unfinished()
        self._unfinished = video  # until its last row is read
        assert self._stream is not None
        for row in self._stream:
            if row["video"] != video:
                raise RuntimeError(f"Ray pipeline returned a row of {row['video']} while reading {video}")
            kind = row["kind"]
            if kind in ("end", "error"):
                self._unfinished = None
            if kind == "end":
                return
            if kind == "error":
                raise VideoError(video, row["reason"])
            if kind == "encoder_error":
                raise EncoderOutputError(row["reason"])
            if kind == "encoder_mismatch":  # every video would fail: stop the ingest, commit nothing
                raise EncoderMismatchError(row["reason"])
            n, dim = int(row["n_tokens"]), int(row["dim"])
            vec = torch.from_numpy(np.frombuffer(row["tokens"], dtype=np.float32).reshape(n, dim).copy())
            what = f"clip {row['start']:.2f}-{row['end']:.2f} s"
            yield SegmentRecord(
                video=video, video_hash=digest, settings=settings, start=float(row["start"]),
                end=float(row["end"]), frame_times=np.asarray(row["timestamps"], dtype=np.float32).tolist(),
                thumbnail=row["thumbnail"] or None, tokens=self.engine._check_vectors(vec, what),
            )
        raise RuntimeError(f"Ray pipeline ended before the last row of {video}")

    def close(self) -> None:
        """Drain what is left of the stream (videos skipped by a failure), releasing the actors."""
        if self._stream is not None:
            for _ in self._stream:
                pass
            self._stream = None


# -- sharded search ---------------------------------------------------------------------------------------
class _Shard:
    """A Ray actor holding some parts of one index version and searching them."""

    def __init__(self, path: str, version: int, part_ids: Sequence[str]) -> None:
        from maxsim.engine import Engine
        from maxsim.store import Snapshot

        self.engine = Engine(path, create=False, version=version)
        full = self.engine.manifest
        man = full.copy()
        wanted = set(part_ids)
        man.parts = [p for p in full.parts if p["id"] in wanted]
        self.snap = Snapshot(self.engine.path, man, self.engine._snapshot)  # its parts are mapped already
        # shard row -> row of the full version's table
        spans = dict(zip((p["id"] for p in full.parts), self.engine._snapshot.part_rows, strict=True))
        self.global_rows = np.concatenate(
            [np.arange(*spans[p["id"]]) for p in man.parts]
        ) if man.parts else np.zeros(0, dtype=np.int64)

    def search(self, q: torch.Tensor, q_off: torch.Tensor, k: int, videos, time_range,
               options: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        s, r = self.engine._search_rows(self.snap, q, q_off, k, videos, time_range, **options)
        g = torch.from_numpy(self.global_rows)[r.clamp(min=0)] if self.global_rows.size else r
        return s, torch.where(r >= 0, g, torch.tensor(-1))


def split_parts(parts: Sequence[dict[str, Any]], n_shards: int) -> list[list[str]]:
    """Part ids split into ``n_shards`` groups of about equal token bytes (largest first, greedy)."""
    groups: list[list[str]] = [[] for _ in range(n_shards)]
    load = [0] * n_shards
    for p in sorted(parts, key=lambda p: -int(p.get("n_tokens", p["n_segments"]))):
        i = load.index(min(load))
        groups[i].append(p["id"])
        load[i] += int(p.get("n_tokens", p["n_segments"]))
    return groups


class ShardedSearch:
    """Search one version of an index with its parts spread over ``n_shards`` Ray actors.

    ``ShardedSearch(engine, n_shards=2)`` pins ``engine``'s current version; :meth:`search`,
    :meth:`search_batch` and :meth:`search_vectors` take the arguments of the engine's methods
    (``mode="pruned"`` included) and return the same hits. Queries are encoded here, once.
    """

    def __init__(self, engine: Any, n_shards: int = 2, gpus_per_shard: float | None = None) -> None:
        ray = _ray()
        init()
        if n_shards < 1:
            raise ValueError(f"n_shards must be at least 1, got {n_shards}")
        self.engine = engine
        self.version = engine.version
        parts = engine.manifest.parts
        groups = [g for g in split_parts(parts, min(n_shards, max(1, len(parts))))]
        gpus = _gpus_per_worker() if gpus_per_shard is None else gpus_per_shard
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_Shard)
        self.shards = [actor.remote(str(engine.path), self.version, g) for g in groups]

    def search(self, text: str, k: int = 10, videos=None, time_range=None, thumbnails: bool = True,
               **options: Any) -> list[Hit]:
        return self.search_batch([text], k, videos, time_range, thumbnails, **options)[0]

    def search_batch(self, texts: Sequence[str], k: int = 10, videos=None, time_range=None,
                     thumbnails: bool = True, **options: Any) -> list[list[Hit]]:
        if isinstance(texts, str):
            raise TypeError("search_batch takes a list of texts; use search() for one")
        return self.search_vectors(self.engine.encoder.encode_texts(list(texts)), k, videos, time_range,
                                   thumbnails, **options)

    def search_vectors(self, queries: Sequence[torch.Tensor], k: int = 10, videos=None, time_range=None,
                       thumbnails: bool = True, **options: Any) -> list[list[Hit]]:
        from maxsim.kernels import merge_topk

        ray = _ray()
        if self.engine.version != self.version:
            raise RuntimeError(f"the engine moved to version {self.engine.version}; this ShardedSearch "
                               f"serves version {self.version}: make a new one")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q, q_off = self.engine._queries(queries)
        results = ray.get([s.search.remote(q, q_off, k, videos, time_range, options) for s in self.shards])
        s, r = merge_topk(torch.cat([x[0] for x in results], 1), torch.cat([x[1] for x in results], 1), k)
        snap = self.engine._snapshot
        return [self.engine._hits(snap, q[int(q_off[i]) : int(q_off[i + 1])], s[i], r[i], thumbnails)
                for i in range(len(queries))]

    def close(self) -> None:
        """Stop the shard actors."""
        ray = _ray()
        for s in self.shards:
            ray.kill(s)
        self.shards = []
