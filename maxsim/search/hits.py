"""Turning top-k rows into :class:`~maxsim.types.Hit` objects: metadata from the snapshot's segment table,
and the evidence of each match from the tokens that made it.

Evidence is computed for the returned hits only, by a second exact pass over their segments' tokens on the
CPU (one ``(query tokens x segment tokens)`` product per hit, the cost of the former best-time pass), so
the scoring kernels stay untouched. Each segment token is placed on a sampled frame, and on a cell of that
frame's token grid, with the grid its encoder declared at ingest (:class:`~maxsim.types.TokenGrid`, kept
in the segment table's ``token_grid`` column). Where the grid is unknown (pooled tokens, indexes written
before grids were recorded) a token's frame is its position in frame order (tokens are stored frame
after frame) and its cell is None: positions are never invented.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from maxsim.index.snapshot import Snapshot
from maxsim.search.result import SearchResult
from maxsim.types import Evidence, Hit, TokenGrid


def build_hits(snap: Snapshot, q: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor,
               thumbnails: bool = True) -> list[Hit]:
    """The hits of one query (tokens ``q``) from its top-k ``scores`` and snapshot table ``rows``; rows
    ``-1`` and non-finite scores (past the end) are left out. ``thumbnails=False`` never reads the JPEGs."""
    t = snap.table
    q = q.float().cpu()
    hits = []
    for s, r in zip(scores.tolist(), rows.tolist(), strict=True):
        if r < 0 or not math.isfinite(s):
            continue
        times = t.column("frame_times")[r].as_py() or []
        start, end = t.column("start")[r].as_py(), t.column("end")[r].as_py()
        grid = stored_grid(t.column("token_grid")[r].as_py())
        m = match(q, snap.segment_tokens(r), times, start, end, grid)
        hits.append(
            Hit(
                video=snap.video(r),
                start=start,
                end=end,
                score=float(s),
                segment_id=int(snap.segment_ids[r]),
                best_time=m.best_time,
                thumbnail=t.column("thumbnail")[r].as_py() if thumbnails else None,
                scores={"maxsim": float(s)},
                frame_times=tuple(float(x) for x in times),
                evidence=m.evidence,
                grid=m.grid,
                frame_scores=m.frame_scores,
            )
        )
    return hits


def stored_grid(value: Sequence[int] | None) -> TokenGrid | None:
    """The segment table's ``token_grid`` entry as a :class:`TokenGrid` (None when not recorded)."""
    if not value or len(value) != 3:
        return None
    try:
        return TokenGrid(*(int(x) for x in value))
    except ValueError:
        return None


@dataclasses.dataclass
class Match:
    """What one segment's tokens say about one query: the evidence per query token, the grid used, the
    MaxSim score of each sampled frame alone, and the time of the frame that matched best."""

    evidence: list[Evidence]
    grid: tuple[int, int] | None
    frame_scores: tuple[float, ...]
    best_time: float


def token_frames(n_tokens: int, n_frames: int, grid: TokenGrid | None) -> tuple[torch.Tensor, bool]:
    """The sampled frame (index) of each token, and whether the grid placed them (else: by position in
    frame order, which is exact only when every frame has as many tokens)."""
    if grid is not None and grid.fits(n_tokens, n_frames):
        step = torch.arange(n_tokens) // grid.per_step
        return (step * grid.frames).clamp(max=n_frames - 1), True
    return (torch.arange(n_tokens) * n_frames // max(n_tokens, 1)).clamp(max=max(n_frames - 1, 0)), False


def match(q: torch.Tensor, d: torch.Tensor, times: Sequence[float], start: float, end: float,
          grid: TokenGrid | None = None) -> Match:
    """Evidence of query tokens ``q`` against one segment's tokens ``d`` (frame ``times``; see the module
    docstring). The contributions are each query token's best dot product, so they sum to the segment's
    MaxSim score (up to the storage dtype's rounding). A segment without tokens or frame times has no
    evidence; its best time is its middle."""
    if not len(times) or d.shape[0] == 0 or q.shape[0] == 0:
        return Match([], None, (), float(start + end) / 2)
    n_frames, n_tok = len(times), d.shape[0]
    sim = q.float() @ d.float().T  # (n_q_tok, n_tok)
    val, arg = sim.max(1)
    frame_of, placed = token_frames(n_tok, n_frames, grid)
    contrib = torch.zeros(n_tok).index_add_(0, arg, val)
    best_frame = int(frame_of[int(contrib.argmax())])
    evidence = []
    for i, (v, j) in enumerate(zip(val.tolist(), arg.tolist(), strict=True)):
        f = int(frame_of[j])
        row = col = None
        if placed and grid is not None:
            row, col = divmod(j % grid.per_step, grid.cols)
        evidence.append(Evidence(token=i, label=None, frame=f, time=float(times[f]), row=row, col=col,
                                 contribution=float(v)))
    per_frame = torch.full((q.shape[0], n_frames), float("-inf"))
    per_frame.scatter_reduce_(1, frame_of.expand(q.shape[0], -1), sim, "amax")
    frame_scores: list[float] = []
    last = float("nan")
    for f in range(n_frames):
        col_f = per_frame[:, f]
        if bool(torch.isfinite(col_f).all()):
            last = float(col_f.sum())
        frame_scores.append(last)  # a frame carrying no token of its own shares its group's score
    first = next((x for x in frame_scores if not math.isnan(x)), 0.0)
    frame_scores = [first if math.isnan(x) else x for x in frame_scores]
    cells = (grid.rows, grid.cols) if placed and grid is not None else None
    return Match(evidence, cells, tuple(frame_scores), float(times[best_frame]))


def label_evidence(hits: Sequence[Hit], labels: Sequence[str] | None) -> None:
    """Give each hit's evidence the query token labels ``labels`` (one per query token; None: leave)."""
    if labels is None:
        return
    for h in hits:
        h.evidence = [dataclasses.replace(e, label=labels[e.token]) if e.token < len(labels) else e
                      for e in h.evidence]


def label_results(results: list[SearchResult], labels: Sequence[Sequence[str] | None]) -> list[SearchResult]:
    """``results`` (one per query) with their hits' evidence labelled (``labels``: per query, one label
    per query token, or None); returns ``results``."""
    for r, lab in zip(results, labels, strict=True):
        label_evidence(r.hits, lab)
    return results
