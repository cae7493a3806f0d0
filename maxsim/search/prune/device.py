"""Pruned search on the search device: the centroid, bag, residual and exact stages in torch over
device-resident prune data, the exact stage through the placed corpus (the candidates as a device mask).

It follows :class:`~maxsim.search.prune.searcher.PrunedSearcher` step for step (same probing, widening,
whole-part rule, bag scores, residual decoding and candidate counts), so it finds the same candidates as
the CPU path on the same index; only the arithmetic runs on the device. The prune arrays of a part are
uploaded once and reused by the next version's searcher while the part's prune files are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maxsim import kernels
from maxsim.search.corpus import Corpus
from maxsim.search.exact import placed_topk
from maxsim.search.prune.files import WHOLE_PART, PartIndex
from maxsim.search.prune.searcher import PrunedSearcher, PruneStats

# bag-score work per block: (query tokens x bag entries) similarities materialised at once
_BAG_BLOCK = 1 << 22


@dataclass
class DevicePart:
    """One part's prune arrays on the device."""

    source: str
    centroids: torch.Tensor  # (C, dim) float32
    nonempty: torch.Tensor  # (C,) bool
    n_nonempty: int
    list_offsets: torch.Tensor  # (C + 1,) int64
    list_rows: torch.Tensor  # int64
    bag_offsets: torch.Tensor  # int64
    bag_codes: torch.Tensor  # int64
    tok_offsets: torch.Tensor | None = None
    token_codes: torch.Tensor | None = None
    residuals: torch.Tensor | None = None  # (n_tokens, bytes) uint8
    table: torch.Tensor | None = None  # (256, per_byte) float32
    dim: int = 0
    list_itemsize: int = 4
    bag_itemsize: int = 2
    code_itemsize: int = 2

    @classmethod
    def upload(cls, idx: PartIndex, device: torch.device) -> DevicePart:
        def dev(a: np.ndarray, dtype=torch.int64) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a)).to(device=device, dtype=dtype)

        part = cls(idx.source, idx.centroids.to(device), idx.nonempty_lists.to(device), idx.n_nonempty_lists,
                   dev(idx.list_offsets), dev(idx.list_rows), dev(idx.bag_offsets), dev(idx.bag_codes),
                   dim=int(idx.centroids.shape[1]), list_itemsize=idx.list_rows.itemsize,
                   bag_itemsize=idx.bag_codes.itemsize)
        if idx.has_residuals:
            part.tok_offsets, part.token_codes = dev(idx.tok_offsets), dev(idx.token_codes)
            part.residuals = torch.from_numpy(np.asarray(idx.residuals)).to(device)
            part.table = idx.codec.table().to(device)
            part.code_itemsize = idx.token_codes.itemsize
        return part


def _ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The indices ``starts[i] .. starts[i] + lengths[i] - 1`` concatenated (device)."""
    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=starts.device)
    first = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    return first + torch.arange(total, device=starts.device)


class DevicePrunedSearcher:
    """Pruned search of one snapshot on its placed corpus's device (see the module docstring)."""

    def __init__(self, host: PrunedSearcher, corpus: Corpus, backend: str,
                 previous: DevicePrunedSearcher | None = None) -> None:
        self.host = host
        self.stamp = host.stamp
        self.corpus = corpus
        self.backend = backend
        self.device = corpus.device
        cache = {} if previous is None else previous.cache
        self.cache: dict[str, DevicePart] = {}
        self.parts: list[tuple[int, int, DevicePart | None]] = []
        self.uploads = 0
        for lo, hi, idx in host.parts:
            part = None
            if idx is not None:
                part = cache.get(idx.source)
                if part is None:
                    part = DevicePart.upload(idx, self.device)
                    self.uploads += 1
                self.cache[idx.source] = part
            self.parts.append((lo, hi, part))
        self._rows_cache: dict = {}

    def candidates(self, q: torch.Tensor, allowed: np.ndarray, allowed_dev: torch.Tensor,
                   n_candidates: int, nprobe: int, n_refine: int | None = None, widen: int = 4
                   ) -> tuple[np.ndarray, PruneStats]:
        """Table rows (ascending) of the ``n_candidates`` best allowed segments of the indexed parts, and
        what was read: :meth:`PrunedSearcher.candidates` on the device."""
        stats = PruneStats()
        qf = q.float()
        n_qt = qf.shape[0]
        refine = n_refine is not None and n_refine > n_candidates
        n_next = int(n_refine) if refine else n_candidates
        sims: dict[int, torch.Tensor] = {}
        f_pi, f_loc, f_score = [], [], []
        for pi, (lo, hi, part) in enumerate(self.parts):
            if part is None:
                continue
            s = qf @ part.centroids.T
            sims[pi] = s
            stats.centroid_bytes += part.centroids.numel() * 2
            n_allowed = int(allowed[lo:hi].sum())
            if n_allowed == 0:
                continue
            if WHOLE_PART * n_next >= n_allowed:
                loc = torch.from_numpy(np.flatnonzero(allowed[lo:hi])).to(self.device)
                f_pi.append(torch.full_like(loc, pi))
                f_loc.append(loc)
                f_score.append(torch.full(loc.shape, float("inf"), device=self.device, dtype=torch.float64))
                continue
            probe_s = torch.where(part.nonempty, s, float("-inf"))
            npr = min(nprobe, part.n_nonempty)
            while True:  # widen the probe until the lists hold n_next allowed segments (or all)
                top_v, top_c = probe_s.topk(npr, dim=1)
                starts = part.list_offsets[top_c].reshape(-1)
                lens = part.list_offsets[top_c + 1].reshape(-1) - starts
                flat = _ranges(starts, lens)
                rows = part.list_rows[flat]
                uniq, inv = torch.unique(rows, return_inverse=True)
                ok = allowed_dev[lo + uniq]
                if int(ok.sum()) >= n_next or npr >= part.n_nonempty:
                    break
                npr = min(2 * npr, part.n_nonempty)
            stats.list_bytes += int(flat.numel()) * part.list_itemsize
            if not bool(ok.any()):
                continue
            tok = torch.arange(n_qt, device=self.device).repeat_interleave(npr).repeat_interleave(lens)
            val = torch.repeat_interleave(top_v.reshape(-1), lens)
            best = top_v[:, -1].repeat(uniq.numel(), 1)  # (n_seg, n_q_tok): imputed where not found
            best.view(-1).scatter_reduce_(0, inv * n_qt + tok, val, reduce="amax")
            first = best.sum(1).double()
            f_pi.append(torch.full((int(ok.sum()),), pi, device=self.device, dtype=torch.int64))
            f_loc.append(uniq[ok])
            f_score.append(first[ok])
        if not f_pi:
            return np.zeros(0, dtype=np.int64), stats
        part_of, loc, score = (torch.cat(x) for x in (f_pi, f_loc, f_score))
        whole = torch.isinf(score)
        if not bool(whole.all()):
            keep = max(0, widen * n_next - int(whole.sum()))
            p_f, l_f = _best(score[~whole], keep, part_of[~whole], loc[~whole])
            part_of, loc = torch.cat([part_of[whole], p_f]), torch.cat([loc[whole], l_f])
        score = torch.empty(loc.numel(), dtype=torch.float64, device=self.device)
        for pi in torch.unique(part_of).tolist():
            sel = torch.nonzero(part_of == pi).flatten()
            score[sel] = self._bag_scores(self.parts[pi][2], sims[pi], loc[sel], stats)
        if refine:
            part_of, loc = _best(score, n_next, part_of, loc)
            score = torch.empty(loc.numel(), dtype=torch.float64, device=self.device)
            for pi in torch.unique(part_of).tolist():
                sel = torch.nonzero(part_of == pi).flatten()
                part = self.parts[pi][2]
                if part.residuals is not None:
                    score[sel] = self._residual_scores(part, q, loc[sel], stats)
                    stats.refined += int(sel.numel())
                else:
                    score[sel] = self._bag_scores(part, sims[pi], loc[sel], stats)
        part_of, loc = _best(score, n_candidates, part_of, loc)
        starts = torch.tensor([lo for lo, _, _ in self.parts], dtype=torch.int64, device=self.device)
        return np.sort((starts[part_of] + loc).cpu().numpy()), stats

    def _bag_scores(self, part: DevicePart, s: torch.Tensor, loc: torch.Tensor, stats: PruneStats
                    ) -> torch.Tensor:
        """``sum_i max_{c in bag} <q_i, c>`` of part-local segments ``loc`` (blocked over bag entries)."""
        b_lo = part.bag_offsets[loc]
        b_len = part.bag_offsets[loc + 1] - b_lo
        stats.list_bytes += int(b_len.sum()) * part.bag_itemsize
        out = torch.empty(loc.numel(), dtype=torch.float64, device=self.device)
        n_qt = s.shape[0]
        mean_len = max(1, int(b_len.sum()) // max(1, loc.numel()))
        per = max(1, _BAG_BLOCK // (n_qt * mean_len))
        for a in range(0, loc.numel(), per):
            lens = b_len[a : a + per]
            codes = part.bag_codes[_ranges(b_lo[a : a + per], lens)]
            seg = torch.repeat_interleave(torch.arange(lens.numel(), device=self.device), lens)
            best = torch.full((n_qt, lens.numel()), float("-inf"), device=self.device)
            best.scatter_reduce_(1, seg.expand(n_qt, -1), s[:, codes], reduce="amax")
            out[a : a + per] = best.sum(0).double()
        return out

    def _residual_scores(self, part: DevicePart, q: torch.Tensor, loc: torch.Tensor, stats: PruneStats
                         ) -> torch.Tensor:
        """MaxSim of ``q`` against part-local segments ``loc`` decoded from their residual codes."""
        t_lo = part.tok_offsets[loc]
        t_len = part.tok_offsets[loc + 1] - t_lo
        flat = _ranges(t_lo, t_len)
        codes = part.token_codes[flat]
        res = part.residuals[flat]
        stats.residual_bytes += int(flat.numel()) * (res.shape[1] + part.code_itemsize)
        x = part.centroids[codes] + part.table[res.long()].reshape(res.shape[0], -1)[:, : part.dim]
        d_off = torch.zeros(loc.numel() + 1, dtype=torch.int64)
        d_off[1:] = torch.cumsum(t_len.cpu(), 0)
        qo = torch.tensor([0, q.shape[0]])
        backend = "torch" if self.backend == "cpu" else self.backend
        scores = kernels.maxsim_scores(q.float(), qo, x.float(), d_off, backend=backend)
        return scores[0].double()

    def search(self, q: torch.Tensor, q_off: torch.Tensor, allowed: np.ndarray, k: int, n_candidates: int,
               nprobe: int, n_refine: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, list[PruneStats]]:
        """Top k (scores, table rows) of each query on the device, ``(n_q, <= k)``, and what each query
        read: :meth:`PrunedSearcher.search` on the device."""
        if n_candidates < k:
            raise ValueError(f"n_candidates ({n_candidates}) must be at least k ({k})")
        if nprobe < 1:
            raise ValueError(f"nprobe must be at least 1, got {nprobe}")
        n_q = q_off.numel() - 1
        host = self.host
        live_bytes = host.searched_bytes(allowed)
        exhaustive = np.zeros_like(allowed)
        n_ex_parts = 0
        for lo, hi, part in self.parts:
            if part is None:
                exhaustive[lo:hi] = allowed[lo:hi]
                n_ex_parts += 1
        ex_bytes = host.searched_bytes(exhaustive)
        s_ex, r_ex = placed_topk(self.corpus, q, q_off, exhaustive, k, self.backend, self._rows_cache)
        allowed_dev = torch.from_numpy(allowed).to(self.device)
        indexed = allowed & ~exhaustive
        indexed_rows = np.flatnonzero(indexed) if n_ex_parts < len(self.parts) else np.zeros(0, np.int64)
        out_s, out_r, out_stats = [], [], []
        for i in range(n_q):
            qi = q[int(q_off[i]) : int(q_off[i + 1])]
            qo = torch.tensor([0, qi.shape[0]])
            if indexed_rows.size <= n_candidates:
                rows, st = indexed_rows, PruneStats()
            else:
                rows, st = self.candidates(qi, allowed, allowed_dev, n_candidates, nprobe, n_refine)
            st.queries, st.candidates, st.total_token_bytes = 1, int(rows.size), live_bytes
            st.exhaustive_parts, st.exhaustive_token_bytes = n_ex_parts, ex_bytes
            cand = np.zeros_like(allowed)
            cand[rows] = True
            st.candidate_token_bytes = host.searched_bytes(cand)
            s, r = placed_topk(self.corpus, qi, qo, cand, k, self.backend, self._rows_cache)
            s = torch.cat([s, s_ex[i : i + 1]], 1)
            r = torch.cat([r, r_ex[i : i + 1]], 1)
            s, r = kernels.merge_topk(s, r, min(k, s.shape[1]))
            out_s.append(s)
            out_r.append(r)
            out_stats.append(st)
        width = max((x.shape[1] for x in out_s), default=0)
        padded = [kernels.merge_topk(x, y, width) for x, y in zip(out_s, out_r, strict=True)]  # same widths
        if not padded:
            return torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.int64), out_stats
        return torch.cat([x[0] for x in padded]), torch.cat([x[1] for x in padded]), out_stats


def _best(score: torch.Tensor, n: int, *arrays: torch.Tensor) -> list[torch.Tensor]:
    """``arrays`` restricted to the ``n`` highest scores (all of them when there are at most ``n``)."""
    if score.numel() <= n:
        return list(arrays)
    sel = torch.topk(score, n).indices
    return [a[sel] for a in arrays]
