"""The engine: the one object a user holds. It composes the stages and owns nothing but their wiring.

:class:`Engine` opens or creates an index (:mod:`maxsim.index`), loads the encoder it records or is given
(:mod:`maxsim.encoders`), ingests through :class:`~maxsim.ingest.Ingester` (locally or over Ray), searches
through a :class:`~maxsim.search.Searcher` of the version it has open, re-ranks what it found when asked
(:class:`~maxsim.rerank.RerankStage`), and keeps the prune index (:mod:`maxsim.search.prune`) up to date
after every write.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from maxsim.channels import TranscriptChannel
from maxsim.distributed.ingest import RayVideoEncoder, worker_encoder
from maxsim.encoders import DEFAULT_ENCODER, PooledEncoder, load_encoder, query_labels
from maxsim.encoders.record import check_encoder, check_spec, encoder_record, encoder_revision, load_args
from maxsim.errors import EncoderOutputError, IndexNotFoundError
from maxsim.index.compact import CompactReport
from maxsim.index.format import KEEP_VERSIONS, TARGET_PART_BYTES, storage_dtype
from maxsim.index.manifest import Manifest
from maxsim.index.select import VideoSelection
from maxsim.index.snapshot import Snapshot
from maxsim.index.store import Store
from maxsim.ingest import (
    VIDEO_EXTENSIONS,
    Ingester,
    IngestReport,
    LocalVideoEncoder,
    expand_paths,
    recorded_sampler,
    settings_key,
    sized_sampler,
)
from maxsim.media.explain import explain_hit, frame_jpeg
from maxsim.media.frames import FrameSampler
from maxsim.media.segment import Segmenter, load_segmenter
from maxsim.query import Query, search_query
from maxsim.rerank import Reranker, RerankStage
from maxsim.search import (
    Searcher,
    SearchOptions,
    SearchResult,
    default_candidates,
    default_refine,
    search_device,
)
from maxsim.search.hits import label_results
from maxsim.search.moments import find_moments
from maxsim.search.prune.build import maintain_prune_index, update_prune_index
from maxsim.search.prune.files import PruneSidecar
from maxsim.types import Encoder, Hit, Moment, video_key


class Engine:
    """A video moment index: ingest videos, then search them with text.

    ``Engine(path, encoder=...)`` opens the index at ``path`` or creates it there. ``encoder`` is an
    :class:`~maxsim.Encoder` or a spec (registered name, Hugging Face id or local folder,
    ``package.module:attr``). Without one, an existing index loads the encoder recorded in it when a
    text query first needs it. An open engine searches the version it opened until :meth:`refresh`.
    With ``create=False`` a missing index raises :class:`~maxsim.errors.IndexNotFoundError`.
    ``version=N`` opens a retained past version, read-only. One process writes at a time: a write
    (ingest, delete, compact) while another process writes raises :class:`~maxsim.errors.LockedError`,
    at once or after waiting ``lock_timeout`` seconds for it to finish.

    ``dtype`` is the storage dtype of a new index (an existing one keeps its own): ``float16`` (default),
    ``bfloat16``, ``float32``, or quantised ``int8`` / ``float8_e4m3fn`` (aliases fp16, bf16, fp32, fp8),
    which keep one float32 scale per token row and are scored on the stored bytes (no dequantised copy);
    their scores differ from float32 by about 2e-3 (int8) / 7e-3 (fp8) of the best score at most (see
    :mod:`maxsim.kernels.quantize`). Bytes per 128-d token: 256 (16-bit), 132 (int8 / fp8).

    The index records the encoder's name (its checkpoint and, for hub checkpoints, the commit loaded:
    reloading it from the record pins that commit), dim and settings. A spec of another encoder family
    than the index's is refused before it is loaded. Opened with the same checkpoint but other encoder
    settings that change the vectors (e.g. a visual token budget), an engine searches as usual, and its
    next ingest re-encodes each video it is given instead of skipping it (the settings are part of each
    video's settings key); videos not re-ingested keep their old vectors.

    Where searches run: ``device="auto"`` (default) scores on the first CUDA device when torch sees one
    and Triton imports, else on the CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` name one. On a GPU the
    index's tokens are placed on the device once (uploaded per part, reused across versions) up to
    ``device_memory`` (bytes, or a fraction of the GPU's memory; default: what leaves 20% free), the rest
    streamed from the memory maps at each search; ``devices=["cuda:0", "cuda:1"]`` spreads the parts over
    several GPUs. ``search_backend`` forces a MaxSim kernel backend (``"triton"``, ``"cpu"``, ``"torch"``):
    on the CPU, ``"triton"`` (under ``TRITON_INTERPRET=1``) or ``"torch"`` runs the device path on CPU
    tensors. See :mod:`maxsim.search.corpus`.

    Token reduction at ingest: a spec followed by ``+pool(factor=2,dedup=0.95,window=1024)`` (see
    :func:`maxsim.encoders.spec.split_pool_spec`), or a :class:`~maxsim.encoders.PooledEncoder` built on a
    spec (``PooledEncoder("colqwen3", factor=2)``). The index records the full spec, so ``Engine(path)``
    reopens it with the same reduction, and an encoder with other reduction settings is refused (its name
    differs). A PooledEncoder wrapping an encoder object has no spec to record: reopen that index with
    ``encoder=``.

    ``sampler``: how frames are sampled at ingest (:class:`~maxsim.media.frames.FrameSampler`). A new index
    records the recipe it is created with (default: 2 fps, 16 frames a segment, each frame sized to what
    the encoder wants, e.g. ColQwen3's visual-token budget); ``Engine(path)`` reopens it with that recipe
    (an index created before recipes were recorded: 2 fps, 16 frames, longest side 448), so that its videos
    are skipped on re-ingest. A sampler given explicitly is used instead; a video sampled otherwise than
    before is re-encoded by the next ingest.

    ``reranker`` (a spec or an object, see :func:`maxsim.rerank.load_reranker`; default
    ``"qwen3-vl-reranker"``, loaded on first use) re-scores the top hits of searches with ``rerank=N``.
    ``transcript_encoder``, ``transcripts``: index what is said (:class:`maxsim.channels.TranscriptChannel`).
    """

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
        device: str | None = "auto",
        search_backend: str | None = None,
        device_memory: int | float | None = None,
        devices: list[str] | None = None,
        reranker: Reranker | str | None = None,
        transcript_encoder: Any = None, transcripts: Any = None,
    ) -> None:
        self.path = Path(path)
        self.search_device = search_device(device)
        self.search_backend = search_backend
        self.device_memory = device_memory
        self.devices = None if devices is None else list(devices)
        dtype = storage_dtype(dtype)
        self._pinned = version
        self.lock_timeout = lock_timeout
        self.store = Store(self.path, sidecars=(PruneSidecar(),))
        self.segmenter = load_segmenter(segmenter)
        self.batch_size = batch_size
        self.rerank_stage = RerankStage(reranker)
        self._spec = encoder if isinstance(encoder, str) else None
        try:
            manifest: Manifest | None = self.store.manifest(version)
        except IndexNotFoundError:
            if not create or version is not None:
                raise
            manifest = None
        if manifest is not None and isinstance(encoder, str):
            check_spec(manifest.encoder, encoder, self.path)  # before any weight is loaded
        self._encoder: Encoder | None = None if encoder is None else load_encoder(encoder)
        self._encoder_source = "given" if encoder is not None else "recorded in the index"
        if isinstance(self._encoder, PooledEncoder) and self._encoder.spec is not None:
            self._spec = self._encoder.spec  # "<inner spec>+pool(...)" in full, whichever way it was given
        if manifest is None:
            if self._encoder is None:
                if DEFAULT_ENCODER is None:
                    raise IndexNotFoundError(f"no index at {self.path}: pass encoder=... to create one there")
                self._spec = DEFAULT_ENCODER
                self._encoder = load_encoder(DEFAULT_ENCODER)
                self._encoder_source = "the default for a new index"
            recipe = (sampler or FrameSampler()).to_record()
            try:
                Store.create(self.path, encoder_record(self._encoder, self._spec), self._encoder.dim, dtype,
                             sampler=recipe, wait=lock_timeout)
            except FileExistsError:  # another process created it meanwhile
                pass
            manifest = self.store.manifest()
        self.sampler = sampler if sampler is not None else recorded_sampler(manifest, self.path)
        self.transcript = TranscriptChannel(self.path, manifest, transcript_encoder, transcripts)
        if self._encoder is not None:
            check_encoder(manifest.encoder, manifest.dim, self._encoder, self.path)
        self._searcher = self._new_searcher(self.store.snapshot(version), None)

    # -- state ---------------------------------------------------------------------------------------
    def _new_searcher(self, snapshot: Snapshot, previous: Searcher | None) -> Searcher:
        return Searcher(snapshot, self.search_device, self.search_backend, previous,
                        budget=self.device_memory, devices=self.devices)

    def _open(self, snapshot: Snapshot) -> None:
        """Search ``snapshot``'s version from now on (placement reused for the parts it shares)."""
        if snapshot is not self._searcher.snapshot:
            self._searcher = self._new_searcher(snapshot, self._searcher)

    @property
    def snapshot(self) -> Snapshot:
        """The version this engine searches: its manifest, segment table and mapped tokens."""
        return self._searcher.snapshot

    @property
    def searcher(self) -> Searcher:
        """The :class:`~maxsim.search.Searcher` of the version this engine searches."""
        return self._searcher

    @property
    def manifest(self) -> Manifest:
        """The manifest of the version this engine searches."""
        return self.snapshot.manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    def refresh(self) -> int:
        """Move to the latest committed version; returns it. Searches until then use the version opened."""
        if self._pinned is not None:
            raise PermissionError(f"{self.path} is open at version {self._pinned}: it does not refresh")
        self._open(self.store.snapshot(previous=self.snapshot))
        return self.version

    def __len__(self) -> int:
        return len(self.snapshot)

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded from the index's record on first use when none was given. Setting it
        (e.g. to a wrapper that serialises calls between threads) checks it is the index's encoder."""
        if self._encoder is None:
            how = load_args(self.manifest.encoder)
            if how is None:
                raise ValueError(
                    f"{self.path} does not record a loadable encoder spec "
                    f"(encoder {self.manifest.encoder.get('name')!r}): pass encoder=..."
                )
            enc = load_encoder(how[0], **how[1])
            check_encoder(self.manifest.encoder, self.manifest.dim, enc, self.path)
            self._encoder, self._spec = enc, how[0]
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Encoder) -> None:
        check_encoder(self.manifest.encoder, self.manifest.dim, encoder, self.path)
        self._encoder = encoder

    @property
    def encoder_loaded(self) -> bool:
        """Whether the encoder is loaded already (searching by vectors never loads it)."""
        return self._encoder is not None

    @property
    def encoder_source(self) -> str:
        """Why this engine uses its encoder: ``"given"``, ``"recorded in the index"`` or ``"the default
        for a new index"``."""
        return self._encoder_source

    def encoder_load_args(self) -> tuple[str, dict[str, Any]] | None:
        """The spec and :func:`~maxsim.encoders.load_encoder` kwargs that load this engine's encoder again
        in another process (a Ray worker): the spec it was loaded from (given, or the index's record),
        pinned at the hub commit it was loaded at, as a reopened index reloads its record. None for an
        encoder object that has no spec."""
        enc = self.encoder
        if self._spec is None:
            return None
        rev = encoder_revision(enc)
        return self._spec, ({"revision": rev} if rev else {})

    @property
    def frame_sampler(self) -> FrameSampler:
        """The recipe ingest samples with: :attr:`sampler` with its frames sized for the encoder (unless
        it sets ``max_side``)."""
        return sized_sampler(self.sampler, self.encoder)

    @property
    def reranker(self) -> Reranker:
        """The reranker of searches with ``rerank=N``, loaded on first use; one whose weights or code
        cannot be had raises :class:`~maxsim.errors.RerankError` saying why."""
        return self.rerank_stage.reranker

    def videos(self) -> list[str]:
        """Paths of the videos in the index, sorted."""
        return sorted(self.snapshot.catalog)

    # -- ingest --------------------------------------------------------------------------------------
    def ingest(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        segmenter: Segmenter | str | None = None,
        progress: bool = True,
        commit_every: int | None = None,
        ray: bool = False,
        ray_workers: int = 2, isolate: bool = True, on_progress: Callable[[Any], None] | None = None,
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
        Killed at any point, the index stays at its last committed version. ``commit_every=N`` commits
        after every N ingested videos (``report.version``: the last version committed). ``isolate``
        (default) decodes each video in a worker process: a decoder crashing or hanging fails that file.
        ``on_progress`` gets each video's :class:`~maxsim.media.VideoProgress` (else ``progress`` draws it).

        With ``ray=True`` decoding, segmentation and frame sampling run as a Ray Data pipeline and
        encoding in a pool of ``ray_workers`` actors (one GPU each when the cluster has GPUs); this
        process writes the part and commits, exactly as without Ray (see :mod:`maxsim.distributed`).
        """
        self._writable("ingest")
        seg = self.segmenter if segmenter is None else load_segmenter(segmenter)
        enc, sampler = self.encoder, self.frame_sampler
        dim, tell = int(self.manifest.dim), on_progress or progress
        video_encoder: LocalVideoEncoder | RayVideoEncoder
        if ray:
            video_encoder = RayVideoEncoder(
                worker_encoder(enc, self.encoder_load_args()), seg, sampler, dim, enc.name,
                batch_size=self.batch_size, num_workers=ray_workers)
        else:
            video_encoder = LocalVideoEncoder(enc, sampler, dim, self.batch_size, isolate, tell)
        made: list[Snapshot] = []
        ts = self.transcript.stage(self.manifest)
        ingester = Ingester(self.store, settings_key(seg, sampler, enc, ts), video_encoder, transcripts=ts,
                            lock_timeout=self.lock_timeout, after_commit=lambda man: made.append(
                                maintain_prune_index(self.path, man, self.snapshot, progress)))
        report = IngestReport(encoder=enc.name, encoder_source=self._encoder_source)
        committed = ingester.run(paths, seg, report, progress=progress, commit_every=commit_every)
        if committed is not None:
            self._open_latest(committed, made[-1] if made else None)
        return report

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
        selection = VideoSelection(prefix, videos, match)
        with self.store.writing(wait=self.lock_timeout):
            base = self.store.manifest()
            doomed = selection.pick(self.store.catalog(base))
            if not doomed:
                return {}
            man = self.store.commit(
                base, delete_videos=list(doomed), op="delete",
                info={"videos": sorted(doomed)[:20], "segments_deleted": sum(doomed.values())},
            )
        self._open_latest(man, None)
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
        ones are removed. See :func:`maxsim.index.compact.compact` for which parts are rewritten.
        """
        self._writable("compact")
        with self.store.writing(wait=self.lock_timeout):
            rep = self.store.compact(target_part_bytes=target_part_bytes, min_dead_fraction=min_dead_fraction,
                                     full=full, keep_versions=keep_versions, progress=progress)
            man = self.store.manifest()
            made = maintain_prune_index(self.path, man, self.snapshot, progress)
        self._open_latest(man, made)
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

    def _open_latest(self, manifest: Manifest, made: Snapshot | None) -> None:
        """After a commit: search ``manifest``'s version (``made``: a snapshot of it already opened)."""
        if made is not None and made.version == manifest.version:
            self._open(made)
        else:
            self._open(Snapshot(self.path, manifest, self.snapshot))

    # -- search --------------------------------------------------------------------------------------
    def search(self, text: str | Query | None = None, k: int = 10, videos: Sequence[str] | None = None,
               time_range: tuple[float, float] | None = None, thumbnails: bool = True, *, image: Any = None,
               clip: Any = None, like: int | None = None, **options: Any) -> list[Hit]:
        """The k segments that best match ``text``, an ``image``, a ``clip=(video, start, end)`` or segments
        ``like`` a hit's ``segment_id`` (itself left out), any together (:mod:`maxsim.query`), best first.

        ``thumbnails=False`` leaves ``Hit.thumbnail`` None (the JPEG bytes are then never read).
        ``mode="pruned"`` scores exactly only candidates picked through the prune index (never wrong, only
        slower, before :meth:`build_prune_index`); ``rerank=N`` re-scores the best N hits with
        :attr:`reranker` (``hit.scores`` holds ``"maxsim"`` and ``"rerank"``; a video file that is gone
        raises :class:`~maxsim.errors.RerankError`). The options are those of
        :class:`~maxsim.search.SearchOptions` (which says more), checked before anything is searched.
        """
        opts = SearchOptions(k=k, videos=videos, time_range=time_range, thumbnails=thumbnails, **options)
        return self.query(text, opts, image=image, clip=clip, like=like).hits

    def moments(self, text: str | Query | None = None, *, image: Any = None, clip: Any = None,
                like: Any = None, k: int = 10, group: str = "moments", margin: float = 0.1,
                thumbnails: bool = True, **options: Any) -> list[Moment]:
        """The k best moments (merged segment hits, refined ends; ``group="video"``: one per video; see
        :mod:`maxsim.search.moments`), with a JPEG of each best frame when ``thumbnails`` (k decodes). The
        query (``text``, ``image``, ``clip``, ``like``) and other options go to :meth:`search`."""
        query = {n: v for n, v in (("image", image), ("clip", clip), ("like", like)) if v is not None}
        return find_moments(lambda n: self.search(text, k=n, **query, **options), k, len(self), margin=margin,
                            group=group, thumbnail=frame_jpeg if thumbnails else None)

    def explain(self, hit: Hit) -> bytes:
        """A PNG of ``hit``'s best frame with a heatmap of the regions its query tokens matched and those
        tokens listed (:func:`maxsim.media.explain.explain_hit`; decodes the frame from the video)."""
        return explain_hit(hit)

    def search_batch(self, texts: Sequence[str], k: int = 10, videos: Sequence[str] | None = None,
                     time_range: tuple[float, float] | None = None, thumbnails: bool = True, **options: Any
                     ) -> list[list[Hit]]:
        """:meth:`search` for several texts at once (one pass over the index)."""
        opts = SearchOptions(k=k, videos=videos, time_range=time_range, thumbnails=thumbnails, **options)
        return [r.hits for r in self.query_batch(texts, opts)]

    def search_vectors(self, queries: Sequence[torch.Tensor], k: int = 10,
                       videos: Sequence[str] | None = None, time_range: tuple[float, float] | None = None,
                       thumbnails: bool = True, **options: Any) -> list[list[Hit]]:
        """Search with precomputed query multi-vectors, each ``(n_tokens, dim)``; see :meth:`search`."""
        opts = SearchOptions(k=k, videos=videos, time_range=time_range, thumbnails=thumbnails, **options)
        return [r.hits for r in self.query_vectors(queries, opts)]

    def query(self, text: str | Query | None = None, options: SearchOptions | None = None, *,
              image: Any = None, clip: Any = None, like: int | None = None, **kwargs: Any) -> SearchResult:
        """Hits and what the search did (:class:`~maxsim.search.SearchResult`) of a query as in :meth:`search`
        or a :class:`~maxsim.query.Query`; ``options``: a :class:`~maxsim.search.SearchOptions` or fields."""
        request = Query.of(text, image=image, clip=clip, like=like)
        if request.text_only:
            return self.query_batch([request.text], options, **kwargs)[0]
        return search_query(request, self._searcher, lambda: (self.encoder, self.frame_sampler),
                            SearchOptions.of(options, **kwargs))

    def query_batch(self, texts: Sequence[str], options: SearchOptions | None = None, **kwargs: Any
                    ) -> list[SearchResult]:
        """:meth:`query` for several texts at once (one pass over the index; each re-ranked on its own)."""
        if isinstance(texts, str):
            raise TypeError("search_batch takes a list of texts; use search() for one")
        opts = SearchOptions.of(options, **kwargs)
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a str")
        if not texts:
            return []
        vecs = None if opts.channels == ("transcript",) else self.encoder.encode_texts(texts)
        first = self.transcript.search(self._searcher, texts, opts.first_stage(), lambda o: label_results(
            self._searcher.search(vecs, o), query_labels(self.encoder, texts, vecs)))
        return self.rerank_stage.apply(texts, first, opts)

    def query_vectors(self, queries: Sequence[torch.Tensor], options: SearchOptions | None = None,
                      **kwargs: Any) -> list[SearchResult]:
        """:meth:`query` with precomputed query multi-vectors, each ``(n_tokens, dim)`` (no re-ranking:
        the reranker needs the query text)."""
        opts = SearchOptions.of(options, **kwargs)
        if opts.rerank or opts.channels not in (None, ("visual",)):
            raise ValueError("rerank needs the query text (so does the transcript channel): use search()")
        return self._searcher.search(list(queries), opts)

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
        self._writable("build a prune index")
        with self.store.writing(wait=self.lock_timeout):
            built = update_prune_index(self.store.snapshot(previous=self.snapshot), n_centroids=n_centroids,
                                       iters=iters, progress=progress, nbits=nbits, rebuild=rebuild,
                                       device=device)
        return built


__all__ = [
    "VIDEO_EXTENSIONS", "EncoderOutputError", "Engine", "IngestReport", "default_candidates",
    "default_refine", "encoder_revision", "expand_paths", "video_key",
]
