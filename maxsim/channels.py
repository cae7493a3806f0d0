"""Searching by what is said as well as by what is seen: the transcript channel and its fusion with the
visual one (a stage the engine composes, like re-ranking).

**Transcript score.** The query is encoded by the index's transcript text encoder (one row per token, or
one pooled row with ``per="cue"``) and each stored transcript line is scored by MaxSim against its rows
(for pooled vectors that is their cosine). A line belongs to every segment of its video it overlaps
(:func:`~maxsim.transcripts.fusion.cue_segment_pairs`); a segment's transcript score is its best line's,
and that line (text and time) is the hit's :attr:`~maxsim.types.Hit.transcript`.

**Channels.** ``channels=("transcript",)`` ranks segments by the transcript score alone (where something
is said; segments no line overlaps are not returned); ``("visual",)`` is the plain visual search; both
(the default when the index has transcripts) fuse the two over the candidates of each channel: the best
``max(5k, 50)`` segments visually and by transcript. With ``fusion="weighted"`` (default) each channel's
scores are min-max normalised over the candidates it scored and added with weights ``1 - w`` (visual)
and ``w`` (transcript), ``w = transcript_weight`` (default 0.5); a candidate a channel did not score
counts 0 there (a segment found only by its transcript is below every visual candidate; a segment
without speech has no transcript score). ``fusion="rrf"`` adds ``w_c / (60 + rank_c)`` instead.
``hit.scores`` holds ``"visual"``, ``"transcript"`` (when scored) and ``"fused"``; ``hit.score`` is the
fused score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from maxsim.index.cues import Cues
from maxsim.index.manifest import Manifest
from maxsim.index.snapshot import Snapshot
from maxsim.search import Searcher, SearchOptions, SearchResult, SearchStats
from maxsim.search.filters import allowed_rows
from maxsim.transcripts.fusion import Fusion, cue_segment_pairs, fuse
from maxsim.transcripts.registry import TranscriptEncoder, load_recorded, load_text_encoder
from maxsim.transcripts.stage import TranscriptOptions, TranscriptStage
from maxsim.types import Hit, TranscriptLine

DEFAULT_TRANSCRIPT_ENCODER = "minilm"
SCORE_ROWS = 1 << 18  # cue vector rows scored per matrix product


class TranscriptChannel:
    """The transcript channel of one engine: the text encoder (given, or the one the index records,
    loaded on first use), the ingest stage it makes, and the fused search.

    ``encoder``: a spec (``"minilm"``, a sentence-transformers or Hugging Face id or folder) or object.
    ``transcripts``: None (on when an encoder is given or the index has transcripts), False (off for
    ingest), True (on, with ``"minilm"`` unless the index records another), or the
    :class:`~maxsim.transcripts.stage.TranscriptOptions` (or a dict of them) to ingest with.
    """

    def __init__(self, path: str | os.PathLike, manifest: Manifest,
                 encoder: TranscriptEncoder | str | None = None,
                 transcripts: bool | TranscriptOptions | dict[str, Any] | None = None) -> None:
        self.path = path
        self.recorded = manifest.transcript
        self._given = encoder
        self._encoder: TranscriptEncoder | None = None
        self._off = transcripts is False
        self._asked = transcripts not in (None, False) or encoder is not None
        self.options = TranscriptOptions.of(None if isinstance(transcripts, bool) else transcripts)
        self._pairs: tuple[Snapshot, np.ndarray, np.ndarray] | None = None  # (snapshot, cue, row) overlaps

    @property
    def encoder(self) -> TranscriptEncoder:
        """The text encoder (loaded on first use); ValueError when it is not the one the index records."""
        if self._encoder is None:
            rec = (self.recorded or {}).get("encoder")
            if self._given is not None:
                enc = load_text_encoder(self._given)
                if rec is not None and rec.get("name") != enc.name:
                    raise ValueError(f"{self.path}: its transcripts were encoded with {rec.get('name')!r}, "
                                     f"not {enc.name!r}: open it without transcript_encoder or with that")
            elif rec is not None:
                enc = load_recorded(rec)
            else:
                enc = load_text_encoder(DEFAULT_TRANSCRIPT_ENCODER)
            self._encoder = enc
        return self._encoder

    @property
    def ingest_on(self) -> bool:
        """Whether ingests index transcripts: asked for, or recorded in the index, and not turned off."""
        return not self._off and (self._asked or self.recorded is not None)

    def stage(self, manifest: Manifest | None = None) -> TranscriptStage | None:
        """The ingest's transcript stage (``manifest``: the version the ingest starts from, whose recipe
        turns transcripts on when another engine added them), or None when transcripts are off."""
        if manifest is not None:
            self.refresh(manifest)
        return TranscriptStage(self.encoder, self.options) if self.ingest_on else None

    def refresh(self, manifest: Manifest) -> None:
        """Take note of the transcript recipe of a newer version."""
        self.recorded = manifest.transcript or self.recorded

    # -- search ------------------------------------------------------------------------------------
    def search(self, searcher: Searcher, texts: Sequence[str], options: SearchOptions,
               visual: Callable[[SearchOptions], list[SearchResult]]) -> list[SearchResult]:
        """The results of ``texts`` over the channels ``options`` asks for (see the module docstring);
        ``visual(options)`` runs the visual search."""
        snap = searcher.snapshot
        cues = snap.cues()
        has = cues is not None and bool(cues.live.any())
        channels = options.channels or (("visual", "transcript") if has else ("visual",))
        if channels == ("visual",):
            return visual(options)
        if not has:
            raise ValueError(f"{self.path}: the index has no transcripts to search (ingest videos with "
                             "subtitles with transcript_encoder=... or transcripts=True first)")
        self.refresh(snap.manifest)
        n_cand = max(5 * options.k, 50)
        seen = visual(options.replace(k=n_cand)) if "visual" in channels else None
        allowed = allowed_rows(snap, options)
        q = self.encoder.encode_queries(list(texts))
        cue_scores = score_cues(cues, q)
        ci, rows = self.pairs(snap, cues)
        out = []
        fusion = Fusion(options.fusion, options.transcript_weight)
        for i in range(len(texts)):
            t_score, t_cue = segment_scores(cue_scores[i], ci, rows, allowed)
            t_top = sorted(t_score, key=lambda r: -t_score[r])[:n_cand]
            if seen is None:
                hits = [row_hit(snap, r, t_score[r], options.thumbnails) for r in t_top[:options.k]]
                for h, r in zip(hits, t_top, strict=False):
                    h.scores = {"transcript": t_score[r]}
                stats = SearchStats(mode="transcript", segments=int(allowed.sum()), backend="cpu")
            else:
                hits, stats = fused_hits(snap, seen[i], t_score, t_top, fusion, options)
            for h in hits:
                row = row_of(snap, h.segment_id)
                if row in t_cue:
                    h.transcript = line(cues, t_cue[row])
                    if seen is None:
                        h.best_time = min(max(h.transcript.start, h.start), h.end)
            out.append(SearchResult(hits, stats))
        return out

    def pairs(self, snap: Snapshot, cues: Cues) -> tuple[np.ndarray, np.ndarray]:
        """Every (live cue, live segment row) that overlap, computed once per snapshot."""
        if self._pairs is None or self._pairs[0] is not snap:
            self._pairs = (snap, *cue_rows(snap, cues))
        return self._pairs[1], self._pairs[2]


def score_cues(cues: Cues, queries: Sequence[torch.Tensor]) -> np.ndarray:
    """MaxSim of each query (rows of its text-encoder vectors) against every cue: ``(queries, cues)``."""
    q = torch.cat([x.float().cpu() for x in queries])
    bounds = np.cumsum([0] + [int(x.shape[0]) for x in queries])
    total = np.zeros((len(queries), len(cues)), np.float64)
    off = cues.offsets
    c0 = 0
    while c0 < len(cues):
        c1 = int(np.searchsorted(off, off[c0] + SCORE_ROWS, side="right")) - 1
        c1 = min(max(c1, c0 + 1), len(cues))
        sim = (cues.vectors[off[c0]:off[c1]].float() @ q.T).numpy()  # (rows, query tokens)
        best = np.maximum.reduceat(sim, (off[c0:c1] - off[c0]).astype(np.int64), axis=0)  # (cues, q toks)
        for i in range(len(queries)):
            total[i, c0:c1] = best[:, bounds[i]:bounds[i + 1]].sum(axis=1)
        c0 = c1
    return total


def cue_rows(snap: Snapshot, cues: Cues) -> tuple[np.ndarray, np.ndarray]:
    """``(cue index, table row)`` of every live cue and live segment of the same video that overlap."""
    seg_codes = pc.dictionary_encode(snap.table.column("video")).combine_chunks()
    names = seg_codes.dictionary.to_pylist()
    codes = np.asarray(seg_codes.indices.to_numpy(zero_copy_only=False), np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    index = {v: j for j, v in enumerate(names)}
    cue_names = np.asarray(cues.table.column("video").to_pylist(), dtype=object)
    c_out, r_out = [], []
    for v in np.unique(cue_names[cues.live]) if cues.live.any() else []:
        j = index.get(v)
        if j is None:
            continue
        seg_rows = order[bounds[j]:bounds[j + 1]]
        seg_rows = seg_rows[snap.live[seg_rows]]
        cue_idx = np.flatnonzero((cue_names == v) & cues.live)
        ci, si = cue_segment_pairs(cues.starts[cue_idx], cues.ends[cue_idx], snap.starts[seg_rows],
                                   snap.ends[seg_rows])
        c_out.append(cue_idx[ci])
        r_out.append(seg_rows[si])
    if not c_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(c_out), np.concatenate(r_out)


def segment_scores(cue_scores: np.ndarray, ci: np.ndarray, rows: np.ndarray, allowed: np.ndarray
                   ) -> tuple[dict[int, float], dict[int, int]]:
    """Per allowed segment row with a line: its best line's score, and that line (earliest on ties)."""
    keep = allowed[rows]
    ci, rows = ci[keep], rows[keep]
    if ci.size == 0:
        return {}, {}
    s = cue_scores[ci]
    order = np.lexsort((ci, -s, rows))
    ci, rows, s = ci[order], rows[order], s[order]
    first = np.ones(rows.size, bool)
    first[1:] = rows[1:] != rows[:-1]
    r, c, v = rows[first].tolist(), ci[first].tolist(), s[first].tolist()
    return dict(zip(r, v, strict=True)), dict(zip(r, c, strict=True))


def row_of(snap: Snapshot, segment_id: int) -> int:
    """The table row of a segment id (ids are unique among a version's rows; the live one wins)."""
    hits = np.flatnonzero(snap.segment_ids == segment_id)
    live = hits[snap.live[hits]]
    return int(live[0] if live.size else hits[0])


def row_hit(snap: Snapshot, row: int, score: float, thumbnails: bool) -> Hit:
    """A hit for table row ``row`` found by its transcript (best time: the segment's start until the
    matching line is known)."""
    t = snap.table
    times = t.column("frame_times")[row].as_py() or []
    start, end = t.column("start")[row].as_py(), t.column("end")[row].as_py()
    return Hit(video=snap.video(row), start=start, end=end, score=float(score),
               segment_id=int(snap.segment_ids[row]), best_time=float(start),
               thumbnail=t.column("thumbnail")[row].as_py() if thumbnails else None,
               frame_times=tuple(float(x) for x in times))


def line(cues: Cues, i: int) -> TranscriptLine:
    return TranscriptLine(cues.text(i), float(cues.starts[i]), float(cues.ends[i]), cues.speaker(i))


def fused_hits(snap: Snapshot, visual: SearchResult, t_score: dict[int, float], t_top: list[int],
               fusion: Fusion, options: SearchOptions) -> tuple[list[Hit], SearchStats]:
    """The best ``options.k`` candidates of both channels by their fused score (module docstring)."""
    by_row = {row_of(snap, h.segment_id): h for h in visual.hits}
    v = {r: h.scores.get("maxsim", h.score) for r, h in by_row.items()}
    t = {r: t_score[r] for r in list(by_row) + t_top if r in t_score}
    ranked = fuse({"visual": v, "transcript": t}, fusion)[:options.k]
    hits = []
    for f in ranked:
        h = by_row.get(f.key) or row_hit(snap, f.key, 0.0, options.thumbnails)
        h.score = f.score
        h.scores = {**({"visual": f.scores["visual"]} if "visual" in f.scores else {}),
                    **({"transcript": f.scores["transcript"]} if "transcript" in f.scores else {}),
                    "fused": f.score}
        hits.append(h)
    stats = visual.stats
    stats.mode = f"{stats.mode}+transcript"
    return hits, stats
