"""Exact MaxSim search: every allowed segment of a placed corpus scored, the top k kept per query."""

from __future__ import annotations

import numpy as np
import torch

from maxsim import kernels
from maxsim.search.corpus import Corpus, PlacedChunk


def exact_topk(corpus: Corpus, q: torch.Tensor, q_off: torch.Tensor, allowed: np.ndarray, k: int,
               backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` (scores, snapshot table rows) of each query among the ``allowed`` rows, ``(n_q, k)``,
    best first, ties by the lower row; ``-inf`` / ``-1`` past the allowed segments. ``q`` (stacked query
    tokens) must be on the corpus's device; ``q_off`` are its CSR offsets."""
    n_q = q_off.numel() - 1
    best_s = torch.full((n_q, k), float("-inf"))
    best_r = torch.full((n_q, k), -1, dtype=torch.int64)
    snap = corpus.snapshot
    for ch in corpus.chunks:
        ok = allowed[ch.rows]
        if not ok.any():
            continue
        snap.verify_rows(ch.rows)  # damaged bytes are reported, never scored (checked once per process)
        s, r = _score_chunk(q, q_off, ch, ok, k, backend)
        best_s, best_r = kernels.merge_topk(torch.cat([best_s, s], 1), torch.cat([best_r, r], 1), k)
    return best_s, best_r


def _score_chunk(q: torch.Tensor, q_off: torch.Tensor, ch: PlacedChunk, ok: np.ndarray, k: int,
                 backend: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k table rows of one chunk among the allowed ones: (scores, rows)."""
    n_excluded = int((~ok).sum())
    if n_excluded == 0 or n_excluded <= k:
        kk = min(k + n_excluded, len(ok))
        s, idx = kernels.maxsim_topk(q, q_off, ch.tokens, ch.host_offsets, kk, d_scale=ch.scales,
                                     backend=backend)
        s, idx = s.cpu(), idx.cpu()
        rows = torch.from_numpy(ch.rows)[idx.clamp(min=0)]
        keep = torch.from_numpy(ok)[idx.clamp(min=0)] & (idx >= 0)
        s = torch.where(keep, s, torch.tensor(float("-inf")))
        rows = torch.where(keep, rows, torch.tensor(-1))
        return s, rows
    sel = np.flatnonzero(ok)
    offsets = ch.host_offsets
    starts, ends = offsets[sel], offsets[sel + 1]
    counts = ends - starts
    tok_idx = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts) + torch.arange(
        int(counts.sum())
    )
    tok_idx = tok_idx.to(ch.tokens.device)
    d = ch.tokens[tok_idx]
    d_scale = None if ch.scales is None else ch.scales[tok_idx]
    d_off = torch.zeros(sel.size + 1, dtype=torch.int64)
    d_off[1:] = torch.cumsum(counts, 0)
    s, idx = kernels.maxsim_topk(q, q_off, d, d_off, min(k, sel.size), d_scale=d_scale, backend=backend)
    s, idx = s.cpu(), idx.cpu()
    rows = torch.from_numpy(ch.rows[sel])[idx.clamp(min=0)]
    return s, torch.where(idx >= 0, rows, torch.tensor(-1))


def placed_topk(corpus: Corpus, q: torch.Tensor, q_off: torch.Tensor, allowed: np.ndarray, k: int,
                backend: str, rows_cache: dict[int, tuple[np.ndarray, dict[torch.device, torch.Tensor]]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` (scores, snapshot table rows) of each query over a placed corpus, on its first device:
    one kernel launch per resident group (with the allowed rows as a device mask when some are left out),
    the streamed parts chunk by chunk through the staging ring, every merge on the device. Nothing here
    waits for the device; ``rows_cache`` keeps each group's table rows (host and per device) for the
    corpus's lifetime."""
    dev0 = corpus.device
    plans: dict[torch.device, kernels.Queries] = {}

    def queries_on(dev: torch.device) -> kernels.Queries:
        if dev not in plans:
            plans[dev] = kernels.Queries(q.to(dev, non_blocking=True), q_off, backend)
        return plans[dev]

    cand_s: list[torch.Tensor] = []
    cand_r: list[torch.Tensor] = []
    for g in corpus.groups:
        dev = g.device
        cached = rows_cache.get(id(g))
        if cached is None:
            rows = corpus.group_rows(g)
            cached = rows_cache[id(g)] = (rows, {})
        rows, on_dev = cached
        ok = allowed[rows]
        if not ok.any():
            continue
        # the batches holding the segments scored match their checksums (masked ones are skipped on the
        # device, so a damaged batch spared by the filters does not stop the search)
        corpus.snapshot.verify_rows(rows[ok])
        rows_dev = on_dev.get(dev)
        if rows_dev is None:
            rows_dev = on_dev[dev] = torch.from_numpy(rows).to(dev)
        mask = None if ok.all() else _to_device(ok, dev)
        s, i = queries_on(dev).topk(g.docs, min(k, int(ok.sum())), mask)
        r = torch.where(i >= 0, rows_dev[i.clamp(min=0)], -1)
        cand_s.append(s.to(dev0, non_blocking=True))
        cand_r.append(r.to(dev0, non_blocking=True))
    for pid in corpus.streamed:
        for ch in corpus.part_chunks(pid):
            ok = allowed[ch.rows]
            if not ok.any():
                continue
            corpus.snapshot.verify_rows(ch.rows)  # damaged bytes are reported, never scored
            host = {"d": ch.tokens, "rows": torch.from_numpy(ch.rows)}
            if ch.scales is not None:
                host["scale"] = ch.scales
            staged = corpus.stager.stage(host)
            docs = kernels.prepare_docs(staged["d"], ch.offsets, staged.get("scale"))
            mask = None if ok.all() else _to_device(ok, dev0)
            s, i = queries_on(dev0).topk(docs, min(k, int(ok.sum())), mask)
            cand_s.append(s)
            cand_r.append(torch.where(i >= 0, staged["rows"][i.clamp(min=0)], -1))
            corpus.stager.release()
    n_q = q_off.numel() - 1
    if not cand_s:
        return (torch.full((n_q, 0), float("-inf"), device=dev0),
                torch.full((n_q, 0), -1, dtype=torch.int64, device=dev0))
    s_all, r_all = torch.cat(cand_s, 1), torch.cat(cand_r, 1)
    return kernels.merge_topk(s_all, r_all, min(k, s_all.shape[1]))


def _to_device(mask: np.ndarray, dev: torch.device) -> torch.Tensor:
    """A host bool mask as int8 on ``dev`` (through pinned memory on CUDA: no wait)."""
    t = torch.from_numpy(mask.astype(np.int8))
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t
