"""Pruned MaxSim search: candidates from token centroids and residual codes, exact re-ranking of a few.

PLAID-style stages; only the last reads segment tokens:

- Build, per part of the index: spherical k-means over a sample of the part's tokens gives
  ``n_centroids`` unit centroids; every token is assigned to its nearest centroid. Per centroid an
  inverted list holds the (part-local) segment rows with a token there; per segment a bag holds its
  distinct centroids; every token is stored as a residual code (:mod:`maxsim.residuals`: its centroid
  plus ``nbits`` bits per dimension of the difference, about 1/8 of float16 at 2 bits).
- Centroid stage: a query token ``q_i`` probes its ``nprobe`` most similar centroids; a segment found in
  the list of a probed centroid ``c`` gets ``<q_i, c>`` as its approximate best match for that token,
  one found in none of token ``i``'s lists the lowest probed similarity of that token. The best segments
  by that sum are then scored against their bags, ``sum_i max_{c in bag} <q_i, c>``. (A part that would
  have to give a large share of its segments is bag-scored whole instead of probed.)
- Refine stage: the ``n_refine`` best by bag score are scored with MaxSim on their tokens decoded from
  the residual codes (the fused CPU kernel reads the codes in place), far closer to the exact score than
  centroids alone; the ``n_candidates`` best go on.
- Exact stage: MaxSim (:mod:`maxsim.kernels`) on the candidates' tokens gives the final top k. Ties
  break on the lower table row, as in exhaustive search, so a pruned search that keeps the true top k
  returns exactly the exhaustive results.

Files, beside the parts in the index folder: ``prune/<part>.centroids.npy`` (float16),
``prune/<part>.list_offsets.npy`` (int64, ``n_centroids + 1``), ``prune/<part>.list_rows.npy`` (int32),
the centroid bags of the segments (``bag_offsets``, ``bag_codes``), the residual codes of the tokens
(``tok_offsets``, ``token_codes``, ``residuals``, ``codec``) and ``prune/manifest.json`` naming the parts
covered (format 1, written before residual codes existed, is read too: its parts skip the refine
stage). The store's manifest is never touched: new files are written and fsynced first, then
``prune/manifest.json`` is replaced atomically. A part without an
entry (a crash between the store commit and the prune commit, or a part made by compaction) is scored
exhaustively until :func:`update_prune_index` covers it; entries and files of parts no longer in the
index are removed by the next update. Deleted segments are filtered with the snapshot's tombstones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from maxsim import kernels
from maxsim.errors import IndexFormatError
from maxsim.index.snapshot import Snapshot
from maxsim.kernels import merge_topk
from maxsim.kernels.cpu import bag_scores, concat_ranges, residual_scores
from maxsim.search.prune.build import part_row_ranges
from maxsim.search.prune.files import (
    PRUNE_DIR,
    WHOLE_PART,
    PartIndex,
    load_part_index,
    prune_stamp,
    read_prune_manifest,
)


@dataclass
class PruneStats:
    """What a pruned search read: for one query, or summed over several (``a + b``)."""

    queries: int = 0
    candidates: int = 0  # segments scored exactly
    candidate_token_bytes: int = 0  # token bytes read for exact re-ranking
    list_bytes: int = 0  # inverted-list and centroid-bag bytes read
    centroid_bytes: int = 0  # centroid bytes read
    refined: int = 0  # segments scored from residual codes
    residual_bytes: int = 0  # residual-code bytes read
    exhaustive_parts: int = 0  # parts without a prune index, scored exhaustively
    exhaustive_token_bytes: int = 0
    total_token_bytes: int = 0  # bytes an exhaustive search would have read

    @property
    def bytes_read(self) -> int:
        return (self.candidate_token_bytes + self.list_bytes + self.centroid_bytes + self.residual_bytes
                + self.exhaustive_token_bytes)

    @property
    def fraction(self) -> float:
        """Bytes read over the bytes an exhaustive search of the same queries would read."""
        return self.bytes_read / max(1, self.total_token_bytes)

    def __add__(self, other: PruneStats) -> PruneStats:
        return PruneStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "candidates": self.candidates,
            "refined": self.refined,
            "bytes_read": self.bytes_read,
            "total_token_bytes": self.total_token_bytes,
            "fraction": self.fraction,
            "exhaustive_parts": self.exhaustive_parts,
        }


class PrunedSearcher:
    """Pruned MaxSim search over one snapshot: candidates from token centroids, exact re-rank."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.stamp = prune_stamp(snap.root)
        man = read_prune_manifest(snap.root)
        entries = {} if man is None else man["parts"]
        self.parts: list[tuple[int, int, PartIndex | None]] = []
        for pid, lo, hi in part_row_ranges(snap):
            e = entries.get(pid)
            if e is not None and int(e["n_segments"]) != hi - lo:
                raise IndexFormatError(
                    f"{snap.root / PRUNE_DIR}: prune entry of part {pid} has {e['n_segments']} segments, "
                    f"the part has {hi - lo}"
                )
            idx = None if e is None else load_part_index(snap.root, pid, e, snap.manifest.dim)
            self.parts.append((lo, hi, idx))
        self._counts = np.zeros(snap.table.num_rows, dtype=np.int64)  # tokens of each table row
        for ch in snap.chunks:
            self._counts[ch.rows] = (ch.offsets[1:] - ch.offsets[:-1]).numpy()
        for lo, hi, idx in self.parts:
            if idx is not None and idx.has_residuals and not np.array_equal(np.diff(idx.tok_offsets),
                                                                             self._counts[lo:hi]):
                raise IndexFormatError(f"{snap.root / PRUNE_DIR}: residual codes of part {idx.part_id} do "
                                       "not match the part's token counts; rebuild them with "
                                       "`maxsim prune --rebuild`")
        self._dim = snap.manifest.dim
        self._elem = snap.chunks[0].tokens.element_size() if snap.chunks else 2
        if snap.chunks and snap.chunks[0].scales is not None:
            self._elem += 4 / self._dim  # one float32 scale per token row

    def searched_bytes(self, rows: np.ndarray) -> int:
        """Token bytes (scales included) an exact scoring of the rows marked in ``rows`` reads."""
        return int(int(self._counts[rows].sum()) * self._dim * self._elem)

    @property
    def covered(self) -> bool:
        """True when every part has a prune index."""
        return all(idx is not None for _, _, idx in self.parts)

    def candidates(
        self,
        q: torch.Tensor,
        allowed: np.ndarray,
        n_candidates: int,
        nprobe: int,
        n_refine: int | None = None,
        widen: int = 4,
    ) -> tuple[np.ndarray, PruneStats]:
        """Table rows (ascending) of the ``n_candidates`` best allowed segments of the indexed parts, and
        what was read.

        1. Per part, the inverted lists of each query token's ``nprobe`` nearest centroids are unioned
           (widening the probe until they hold enough allowed segments) and the segments found ranked by
           probed similarities, a token's lowest probed similarity standing in where a segment was not
           found; the best ``widen * n_refine`` over all parts go on. A part whose allowed segments are
           at most twice the number wanted is taken whole (its lists are not read).
        2. Those are scored against their centroid bags, ``sum_i max_{c in bag} <q_i, c>``; the best
           ``n_refine`` go on.
        3. Those are scored with MaxSim on their tokens decoded from residual codes (segments of parts
           without residual codes keep their bag score); the best ``n_candidates`` are returned.

        ``n_refine`` at or below ``n_candidates`` (or None) skips step 3.
        """
        stats = PruneStats()
        qf = q.float()
        n_qt = qf.shape[0]
        refine = n_refine is not None and n_refine > n_candidates
        n_next = int(n_refine) if refine else n_candidates
        sims: dict[int, torch.Tensor] = {}
        found_pi, found_loc, found_score = [], [], []
        for pi, (lo, hi, idx) in enumerate(self.parts):
            if idx is None:
                continue
            s = qf @ idx.centroids.T  # (n_q_tok, n_centroids)
            sims[pi] = s
            stats.centroid_bytes += idx.centroids.numel() * 2
            n_allowed = int(allowed[lo:hi].sum())
            if n_allowed == 0:
                continue
            if WHOLE_PART * n_next >= n_allowed:  # cheaper to bag-score the whole part than to probe
                found_pi.append(np.full(n_allowed, pi))
                found_loc.append(np.flatnonzero(allowed[lo:hi]))
                found_score.append(np.full(n_allowed, np.inf))
                continue
            nonempty = idx.nonempty_lists
            probe_s = torch.where(nonempty, s, torch.tensor(float("-inf")))  # never probe empty lists
            n_nonempty = idx.n_nonempty_lists
            npr = min(nprobe, n_nonempty)
            while True:  # widen the probe until the lists hold n_next allowed segments (or all)
                top_v, top_c = probe_s.topk(npr, dim=1)
                starts = idx.list_offsets[top_c.numpy()].reshape(-1)
                lens = idx.list_offsets[top_c.numpy() + 1].reshape(-1) - starts
                flat = concat_ranges(starts, lens)
                rows = np.asarray(idx.list_rows[flat], dtype=np.int64)
                uniq, inv = np.unique(rows, return_inverse=True)
                ok = allowed[lo + uniq]
                if int(ok.sum()) >= n_next or npr >= n_nonempty:
                    break
                npr = min(2 * npr, n_nonempty)
            stats.list_bytes += flat.size * idx.list_rows.itemsize
            if not ok.any():
                continue
            tok = np.repeat(np.repeat(np.arange(n_qt), npr), lens)
            val = np.repeat(top_v.reshape(-1).numpy(), lens)
            best = top_v[:, -1].repeat(uniq.size, 1)  # (n_seg, n_q_tok): imputed where not found
            best.view(-1).scatter_reduce_(
                0, torch.from_numpy(inv * n_qt + tok), torch.from_numpy(val), reduce="amax"
            )
            first = best.sum(1).numpy()
            found_pi.append(np.full(int(ok.sum()), pi))
            found_loc.append(uniq[ok])
            found_score.append(first[ok])
        if not found_pi:
            return np.zeros(0, dtype=np.int64), stats
        part_of, loc, score = (np.concatenate(x) for x in (found_pi, found_loc, found_score))
        whole = np.isinf(score)  # segments of parts taken whole all go on
        if not whole.all():
            keep = max(0, widen * n_next - int(whole.sum()))
            p_f, l_f = self._best(score[~whole], keep, part_of[~whole], loc[~whole])
            part_of, loc = np.concatenate([part_of[whole], p_f]), np.concatenate([loc[whole], l_f])
        # step 2: centroid bags
        score = np.empty(loc.size, dtype=np.float64)
        for pi in np.unique(part_of):
            sel = np.flatnonzero(part_of == pi)
            score[sel] = self._bag_scores(self.parts[pi][2], sims[pi], loc[sel], stats)
        if refine:  # step 3: residual codes
            part_of, loc = self._best(score, n_next, part_of, loc)
            score = np.empty(loc.size, dtype=np.float64)
            for pi in np.unique(part_of):
                sel = np.flatnonzero(part_of == pi)
                idx = self.parts[pi][2]
                if idx.has_residuals:
                    score[sel] = self._residual_scores(idx, q, loc[sel], stats)
                    stats.refined += sel.size
                else:
                    score[sel] = self._bag_scores(idx, sims[pi], loc[sel], stats)
        part_of, loc = self._best(score, n_candidates, part_of, loc)
        starts = np.array([lo for lo, _, _ in self.parts], dtype=np.int64)
        return np.sort(starts[part_of] + loc), stats

    @staticmethod
    def _best(score: np.ndarray, n: int, *arrays: np.ndarray) -> list[np.ndarray]:
        """``arrays`` restricted to the ``n`` highest scores (all of them when there are at most ``n``)."""
        if score.size <= n:
            return list(arrays)
        sel = np.argpartition(-score, n - 1)[:n]
        return [a[sel] for a in arrays]

    @staticmethod
    def _bag_scores(idx: PartIndex, s: torch.Tensor, loc: np.ndarray, stats: PruneStats) -> np.ndarray:
        """``sum_i max_{c in bag} <q_i, c>`` of part-local segments ``loc``; ``s``: (n_q_tok, n_centroids)."""
        b_lo = np.asarray(idx.bag_offsets[loc], dtype=np.int64)
        b_len = np.asarray(idx.bag_offsets[loc + 1], dtype=np.int64) - b_lo
        stats.list_bytes += int(b_len.sum()) * idx.bag_codes.itemsize
        return bag_scores(s, idx.bag_codes, b_lo, b_len, check_codes=False).double().numpy()

    @staticmethod
    def _residual_scores(idx: PartIndex, q: torch.Tensor, loc: np.ndarray, stats: PruneStats) -> np.ndarray:
        """MaxSim of ``q`` against part-local segments ``loc`` decoded from their residual codes (read in
        place by the fused CPU kernel)."""
        t_lo = np.asarray(idx.tok_offsets[loc], dtype=np.int64)
        t_len = np.asarray(idx.tok_offsets[loc + 1], dtype=np.int64) - t_lo
        qo = torch.tensor([0, q.shape[0]])
        s = residual_scores(q, qo, idx.centroids, idx.token_codes, idx.residuals, idx.codec.table(), t_lo,
                            t_len, check_codes=False)
        stats.residual_bytes += int(t_len.sum()) * (idx.residuals.shape[1] + idx.token_codes.itemsize)
        return s[0].double().numpy()

    def gather(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Tokens, CSR offsets and (int8 / fp8 storage) scales of the segments in table rows ``rows``."""
        counts = self._counts[rows]
        off = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=off[1:])
        out = torch.empty(int(off[-1]), self._dim, dtype=self.snap.chunks[0].tokens.dtype)
        scaled = self.snap.chunks[0].scales is not None
        out_scales = torch.empty(int(off[-1]), dtype=torch.float32) if scaled else None
        self.snap.verify_rows(rows)  # damaged bytes are reported, never scored
        chunks = self.snap.row_chunk[rows]
        for c in np.unique(chunks):
            sel = np.flatnonzero(chunks == c)
            ch = self.snap.chunks[int(c)]
            starts = ch.offsets.numpy()[self.snap.row_local[rows[sel]]]
            src = concat_ranges(starts, counts[sel])
            dst = concat_ranges(off[sel], counts[sel])
            out[torch.from_numpy(dst)] = ch.tokens[torch.from_numpy(src)]
            if out_scales is not None:
                out_scales[torch.from_numpy(dst)] = ch.scales[torch.from_numpy(src)]
        return out, torch.from_numpy(off), out_scales

    def _exhaustive(self, q, q_off, allowed: np.ndarray, k: int, stats: PruneStats):
        """Exact top k over the allowed rows of parts without a prune index."""
        rows = [np.arange(lo, hi)[allowed[lo:hi]] for lo, hi, idx in self.parts if idx is None]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        stats.exhaustive_parts += sum(1 for *_, idx in self.parts if idx is None)
        return self._exact(q, q_off, rows, k, stats, exhaustive=True)

    def _exact(self, q, q_off, rows: np.ndarray, k: int, stats: PruneStats, exhaustive: bool = False):
        n_q = q_off.numel() - 1
        if rows.size == 0:
            return (torch.full((n_q, k), float("-inf")), torch.full((n_q, k), -1, dtype=torch.int64))
        d, d_off, d_scale = self.gather(rows)
        nbytes = d.numel() * d.element_size() + (0 if d_scale is None else d_scale.numel() * 4)
        if exhaustive:
            stats.exhaustive_token_bytes += nbytes * n_q
        else:
            stats.candidate_token_bytes += nbytes * n_q
        s, i = kernels.maxsim_topk(q, q_off, d, d_off, k, **({} if d_scale is None else {"d_scale": d_scale}))
        r = torch.from_numpy(rows)[i.clamp(min=0)]
        return s, torch.where(i >= 0, r, torch.tensor(-1))

    def search(
        self,
        q: torch.Tensor,
        q_off: torch.Tensor,
        allowed: np.ndarray,
        k: int,
        n_candidates: int = 1000,
        nprobe: int = 4,
        n_refine: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[PruneStats]]:
        """Top k (scores, table rows) of each query, ``(n_q, k)`` each, best first, ties by lower row, and
        what each query read.

        ``n_candidates`` segments are scored exactly, picked from ``n_refine`` scored from residual codes
        (see :meth:`candidates`; None or at most ``n_candidates``: no refine stage).
        """
        if n_candidates < k:
            raise ValueError(f"n_candidates ({n_candidates}) must be at least k ({k})")
        if nprobe < 1:
            raise ValueError(f"nprobe must be at least 1, got {nprobe}")
        if n_refine is not None and n_refine < 0:
            raise ValueError(f"n_refine must be a number of segments (>= 0) or None, got {n_refine}")
        n_q = q_off.numel() - 1
        live_bytes = self.searched_bytes(allowed)
        ex = PruneStats()
        s_ex, r_ex = self._exhaustive(q, q_off, allowed, k, ex)
        out_s = torch.full((n_q, k), float("-inf"))
        out_r = torch.full((n_q, k), -1, dtype=torch.int64)
        out_stats: list[PruneStats] = []
        indexed = [np.arange(lo, hi)[allowed[lo:hi]] for lo, hi, idx in self.parts if idx is not None]
        indexed = np.concatenate(indexed) if indexed else np.zeros(0, dtype=np.int64)
        for i in range(n_q):
            qi = q[int(q_off[i]) : int(q_off[i + 1])]
            qo = torch.tensor([0, qi.shape[0]])
            if indexed.size <= n_candidates:  # few allowed segments (small index, tight filter): all
                rows, st = indexed, PruneStats()
            else:
                rows, st = self.candidates(qi, allowed, n_candidates, nprobe, n_refine)
            st.queries = 1
            st.candidates = int(rows.size)
            st.total_token_bytes = live_bytes
            st.exhaustive_parts = ex.exhaustive_parts
            st.exhaustive_token_bytes = ex.exhaustive_token_bytes // max(1, n_q)
            s, r = self._exact(qi, qo, rows, k, st)
            out_stats.append(st)
            s = torch.cat([s, s_ex[i : i + 1]], 1)
            r = torch.cat([r, r_ex[i : i + 1]], 1)
            out_s[i], out_r[i] = (x[0] for x in merge_topk(s, r, k))
        return out_s, out_r, out_stats
