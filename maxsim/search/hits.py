"""Turning top-k rows into :class:`~maxsim.types.Hit` objects: metadata from the snapshot's segment table,
the best frame time from the tokens that matched."""

from __future__ import annotations

import math

import torch

from maxsim.index.snapshot import Snapshot
from maxsim.types import Hit


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
        hits.append(
            Hit(
                video=snap.video(r),
                start=start,
                end=end,
                score=float(s),
                segment_id=int(snap.segment_ids[r]),
                best_time=best_time(q, snap.segment_tokens(r), times, start, end),
                thumbnail=t.column("thumbnail")[r].as_py() if thumbnails else None,
                scores={"maxsim": float(s)},
                frame_times=tuple(float(x) for x in times),
            )
        )
    return hits


def best_time(q: torch.Tensor, d: torch.Tensor, times: list[float], start: float, end: float) -> float:
    """Frame time of the segment token that contributes most to the MaxSim score.

    Each query token picks its best segment token; the token with the largest summed contribution wins.
    Tokens map to frames in order (an encoder emits a clip's tokens frame by frame).
    """
    if not times or d.shape[0] == 0:
        return float(start + end) / 2
    sim = q.float() @ d.float().T  # (n_q_tok, n_tok)
    val, arg = sim.max(1)
    contrib = torch.zeros(d.shape[0]).index_add_(0, arg, val)
    j = int(contrib.argmax())
    frame = min(len(times) - 1, j * len(times) // d.shape[0])
    return float(times[frame])
