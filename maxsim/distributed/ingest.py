"""Ray ingest: decoding, segmentation and frame sampling as a Ray Data pipeline, encoding in an actor pool.

:class:`RayVideoEncoder` is a :class:`~maxsim.ingest.VideoEncoder`: ``Engine.ingest(paths, ray=True)``
(``maxsim ingest --ray``) hands it to the same :class:`~maxsim.ingest.Ingester` as a plain ingest.

1. a CPU stage (``flat_map``, one task per video): decode once, segment, sample frames
   (:func:`maxsim.media.iter_clips`, in a worker process of the task's: a decoder crash fails that video
   only), one row per clip with its frames and thumbnail;
2. an encoder actor pool (``map_batches`` with ``concurrency=num_workers``): each actor loads the
   engine's encoder once (a GPU per actor when the cluster has GPUs) and encodes batches of clips. It
   loads it from the engine's spec at the hub revision the engine's encoder was loaded at (an encoder
   object without a spec is pickled to it), and refuses to encode when what it loaded differs in name,
   dim or vector settings: the ingest then raises :class:`~maxsim.errors.EncoderMismatchError`;
3. the calling process consumes the rows in input order and writes them into one new part, with the
   same skip / replace / rollback rules and the one commit of a plain ingest, so the index it makes is
   the one a single-process ingest makes.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from maxsim.distributed.cluster import gpus_per_worker, init, ray_module
from maxsim.encoders import load_encoder
from maxsim.encoders.record import encoder_identity, encoder_token_grid
from maxsim.errors import EncoderMismatchError, EncoderOutputError, VideoError
from maxsim.index.parts import SegmentRecord
from maxsim.ingest import check_vectors
from maxsim.media.frames import FrameSampler
from maxsim.media.segment import Segmenter
from maxsim.media.worker import isolated_clips
from maxsim.types import Clip, Encoder, decode_path, encode_path


class _ClipRows:
    """CPU stage: one video path in, its clips out (frames as raw bytes), then an end or error row."""

    def __init__(self, segmenter: Any, sampler: Any) -> None:
        self.segmenter = segmenter
        self.sampler = sampler

    def __call__(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        video = decode_path(row["video"])
        base = {"video": row["video"], "kind": "clip", "reason": "", "start": 0.0, "end": 0.0, "frames": b"",
                "shape": [0, 0, 0, 0], "timestamps": [], "thumbnail": b""}
        try:
            for clip, thumb in isolated_clips(video, self.segmenter, self.sampler):
                frames = np.ascontiguousarray(clip.frames, dtype=np.uint8)
                yield {**base, "start": float(clip.start), "end": float(clip.end), "frames": frames.tobytes(),
                       "shape": list(frames.shape), "thumbnail": thumb or b"",
                       "timestamps": np.asarray(clip.timestamps, dtype=np.float64).tolist()}
        except VideoError as e:
            yield {**base, "kind": "error", "reason": e.reason}
            return
        yield {**base, "kind": "end"}


def worker_encoder(encoder: Encoder, load_args: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The constructor kwargs of an encoder actor, so that it encodes with exactly ``encoder``.

    With ``load_args`` (the spec the engine loaded its encoder from, given or recorded in the index, and
    the ``load_encoder`` kwargs that pin the hub revision it was loaded at): that spec and those kwargs,
    so a worker never follows the hub to a newer commit. An encoder object without a spec is pickled to
    the workers as it is. ``expect`` is what the worker's encoder must match (name, dim and the settings
    that change vectors); device and dtype are left to each worker (a GPU when it has one), as they are
    to any process opening the index."""
    spec, kwargs = load_args if load_args is not None else (encoder, {})
    return {"encoder": spec, "load_kwargs": kwargs, "expect": encoder_identity(encoder)}


class _EncodeBatch:
    """Encoder actor: loads the encoder once, encodes the clip rows of each batch.

    When the encoder it loads is not the one expected (another checkpoint or commit, other settings), it
    encodes nothing: each clip row comes back as ``encoder_mismatch`` with the reason, and the ingest
    stops with :class:`~maxsim.store.EncoderMismatchError` before committing anything."""

    def __init__(self, encoder: Any, load_kwargs: dict[str, Any] | None = None,
                 expect: dict[str, Any] | None = None) -> None:
        if not isinstance(encoder, str) and not hasattr(encoder, "encode_clips"):
            encoder = ray_module().get(encoder)  # an encoder object the driver put in the object store
        kwargs = dict(load_kwargs or {})
        self.encoder = load_encoder(encoder, **kwargs)
        self.mismatch = "" if expect is None else _mismatch(self.encoder, expect, encoder, kwargs)

    def __call__(self, batch: Any) -> Any:
        rows = batch.to_dict("records")
        clips = [
            Clip(decode_path(r["video"]), r["start"], r["end"],
                 np.frombuffer(r["frames"], dtype=np.uint8).reshape([int(x) for x in r["shape"]]),
                 np.asarray(r["timestamps"], dtype=np.float64))
            for r in rows if r["kind"] == "clip"
        ]
        vecs = self.encoder.encode_clips(clips) if clips and not self.mismatch else []
        bad = len(vecs) != len(clips)
        out, j = [], 0
        for r in rows:
            o = {k: r[k] for k in ("video", "kind", "reason", "start", "end", "timestamps", "thumbnail")}
            o["tokens"], o["n_tokens"], o["dim"], o["token_grid"] = b"", 0, 0, []
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
                        grid = encoder_token_grid(self.encoder, clips[j], t.shape[0])
                        o["token_grid"] = [] if grid is None else grid.to_list()
                    else:
                        o["kind"] = "encoder_error"
                        o["reason"] = f"encoder {self.encoder.name!r} returned {type(v).__name__} for a clip"
                j += 1
            out.append(o)
        import pandas as pd

        return pd.DataFrame(out)


def _mismatch(enc: Any, expect: dict[str, Any], source: Any, kwargs: dict[str, Any]) -> str:
    """Why the encoder a worker loaded is not the driver's (``expect``); "" when it is."""
    got = encoder_identity(enc)
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
    """A :class:`~maxsim.ingest.VideoEncoder` running a Ray Data pipeline: told every video to encode up
    front (:meth:`plan`), then asked for each video's segment records in turn, in that order.

    ``actor_kwargs`` come from :func:`worker_encoder`; ``dim`` and ``encoder_name`` check the vectors the
    actors return, as a plain ingest checks its encoder's.
    """

    needs_plan = True
    _unfinished: str | None = None  # a video whose rows were not all read (it failed midway)

    def __init__(self, actor_kwargs: dict[str, Any], segmenter: Segmenter, sampler: FrameSampler, dim: int,
                 encoder_name: str, batch_size: int = 8, num_workers: int = 2) -> None:
        if num_workers < 1:
            raise ValueError(f"ray_workers must be at least 1, got {num_workers}")
        self.actor_kwargs = dict(actor_kwargs)
        self.segmenter, self.sampler = segmenter, sampler
        self.dim, self.encoder_name = int(dim), encoder_name
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.videos: list[str] = []
        self._stream: Iterator[dict[str, Any]] | None = None
        self._next = 0

    def plan(self, videos: Sequence[str]) -> None:
        """Start the pipeline over ``videos``, in the order they will be asked for."""
        ray = ray_module()
        init()
        self.videos = list(videos)
        self._next = 0
        # actors load the engine's encoder from its spec at its pinned revision (an encoder object
        # without a spec is pickled to them), and check it is the engine's
        actor_kwargs = dict(self.actor_kwargs)
        if not isinstance(actor_kwargs["encoder"], str):
            actor_kwargs["encoder"] = _put_encoder(ray, actor_kwargs["encoder"])
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in input order: same index
        try:
            ctx.enable_progress_bars = False
        except AttributeError:  # pragma: no cover - older Ray
            pass
        self._stream = None
        if self.videos:
            ds = ray.data.from_items([{"video": encode_path(v)} for v in self.videos],
                                     override_num_blocks=len(self.videos))
            # CPUs: the encoder actors hold theirs for the whole ingest, so leave at least one to decode
            cpus = float(ray.cluster_resources().get("CPU", 1))
            actor_cpus = max(0.1, min(1.0, (cpus - 1) / self.num_workers))
            ds = ds.flat_map(_ClipRows(self.segmenter, self.sampler), num_cpus=min(1.0, max(0.1, cpus - 1)))
            ds = ds.map_batches(
                _EncodeBatch, fn_constructor_kwargs=actor_kwargs, batch_size=self.batch_size,
                batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=self.num_workers),
                num_gpus=gpus_per_worker(),
                num_cpus=actor_cpus,
            )
            self._stream = iter(ds.iter_rows())

    def _skip_unfinished(self) -> None:
        """Drop the rest of the rows of a video that failed midway, up to its last row."""
        video, self._unfinished = self._unfinished, None
        if video is None:
            return
        assert self._stream is not None
        for row in self._stream:
            if decode_path(row["video"]) != video:
                raise RuntimeError(f"Ray pipeline returned a row of {row['video']} while skipping {video}")
            if row["kind"] in ("end", "error"):
                return

    def __call__(self, video: str, digest: str, settings: str, segmenter: Segmenter
                 ) -> Iterator[SegmentRecord]:
        """The segment records of ``video``, which must be the next video of the plan."""
        if self._next >= len(self.videos) or self.videos[self._next] != video:
            raise RuntimeError(f"{video}: asked out of order from the Ray pipeline (expected "
                               f"{self.videos[self._next] if self._next < len(self.videos) else 'none'})")
        self._next += 1
        self._skip_unfinished()
        self._unfinished = video  # until its last row is read
        assert self._stream is not None
        for row in self._stream:
            if decode_path(row["video"]) != video:
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
                thumbnail=row["thumbnail"] or None,
                tokens=check_vectors(vec, self.dim, self.encoder_name, what),
                token_grid=_grid(row.get("token_grid")),
            )
        raise RuntimeError(f"Ray pipeline ended before the last row of {video}")

    def close(self) -> None:
        """Drain what is left of the stream (videos skipped by a failure), releasing the actors."""
        if self._stream is not None:
            for _ in self._stream:
                pass
            self._stream = None


def _grid(value: object) -> list[int] | None:
    """A row's token grid (a list or array; empty: none) as ``[frames, rows, cols]`` or None."""
    if value is None:
        return None
    grid = [int(x) for x in value]  # type: ignore[attr-defined]
    return grid if len(grid) == 3 else None
