"""Building the prune index of a snapshot's parts: centroids, inverted lists, centroid bags and residual
codes, one part at a time, committed through the prune manifest."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from maxsim.index.manifest import Manifest
from maxsim.index.snapshot import Snapshot
from maxsim.kernels.cpu import concat_ranges
from maxsim.search.prune.files import (
    FILE_KEYS,
    PRUNE_DIR,
    PRUNE_FORMAT,
    RESIDUAL_BITS,
    PartIndex,
    read_prune_manifest,
    save_part_index,
    write_prune_manifest,
)
from maxsim.search.prune.kmeans import assign, build_device, default_n_centroids, dequant, spherical_kmeans
from maxsim.search.prune.residuals import ResidualCodec


def build_part_index(
    part_id: str,
    chunks: Sequence[tuple],
    n_segments: int,
    n_centroids: int | None = None,
    sample_per_centroid: int = 16,
    iters: int = 4,
    seed: int = 0,
    nbits: int | None = RESIDUAL_BITS,
    device: str | torch.device | None = None,
) -> PartIndex:
    """Train centroids on a sample of a part's tokens; build its inverted lists, centroid bags and (unless
    ``nbits`` is None) ``nbits``-bit residual codes of every token.

    ``chunks`` are ``(tokens, offsets, local_rows[, scales])``: a token matrix, its CSR offsets, the
    part-local row of each of its segments and, for int8 / fp8 storage, the tokens' scales. k-means and
    the assignment of every token run on ``device`` (default: the CPU; a CUDA device is much faster on
    large parts); the index itself lives on the CPU.
    """
    dev = build_device(device)
    chunks = [tuple(c) + (None,) * (4 - len(c)) for c in chunks]
    n_tokens = sum(int(t.shape[0]) for t, *_ in chunks)
    if n_tokens == 0:
        raise ValueError(f"part {part_id} has no token to index")
    k = default_n_centroids(n_tokens) if n_centroids is None else max(1, min(int(n_centroids), n_tokens))
    g = torch.Generator().manual_seed(seed)
    want = min(n_tokens, k * sample_per_centroid)
    picks = []
    for tok, _, _, sc in chunks:
        m = round(want * tok.shape[0] / n_tokens)
        if m > 0:
            sel = torch.randperm(tok.shape[0], generator=g)[:m]
            picks.append(dequant(tok[sel], None if sc is None else sc[sel]))
    sample = torch.nn.functional.normalize(torch.cat(picks).float(), dim=1)
    centroids = spherical_kmeans(sample, k, iters=iters, seed=seed, device=dev)
    c_dev = centroids.to(dev)
    codec = None
    if nbits is not None:
        a, _ = assign(sample, c_dev)
        codec = ResidualCodec.train(sample - centroids[a], nbits)
    codes_all, rows_all, tok_codes, tok_res, tok_rows, tok_counts = [], [], [], [], [], []
    for tok, off, rows, sc in chunks:
        codes_t, packed = assign(tok, c_dev, sc, codec)
        codes = codes_t.numpy()
        counts = (off[1:] - off[:-1]).numpy()
        seg = np.repeat(rows.astype(np.int64), counts)
        key = np.unique(codes.astype(np.int64) * n_segments + seg)  # one entry per (centroid, segment)
        codes_all.append(key // n_segments)
        rows_all.append(key % n_segments)
        if codec is not None:
            tok_codes.append(codes)
            tok_res.append(packed)
            tok_rows.append(np.asarray(rows, dtype=np.int64))
            tok_counts.append(counts.astype(np.int64))
    codes = np.concatenate(codes_all)
    seg_rows = np.concatenate(rows_all)
    code_dtype = np.int16 if centroids.shape[0] <= np.iinfo(np.int16).max else np.int32
    order = np.lexsort((codes, seg_rows))  # bags: by segment, then centroid
    bag_offsets = np.zeros(n_segments + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg_rows, minlength=n_segments), out=bag_offsets[1:])
    bag_codes = codes[order].astype(code_dtype)
    order = np.lexsort((seg_rows, codes))  # inverted lists: by centroid, then segment
    codes, seg_rows = codes[order], seg_rows[order]
    offsets = np.zeros(centroids.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=centroids.shape[0]), out=offsets[1:])
    idx = PartIndex(part_id, centroids, offsets, seg_rows.astype(np.int32), bag_offsets, bag_codes,
                    n_segments)
    if codec is not None:  # residual codes in part-local row order
        rows = np.concatenate(tok_rows)
        counts = np.concatenate(tok_counts)
        src_off = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(counts, out=src_off[1:])
        by_row = np.zeros(n_segments, dtype=np.int64)
        by_row[rows] = counts
        idx.tok_offsets = np.zeros(n_segments + 1, dtype=np.int64)
        np.cumsum(by_row, out=idx.tok_offsets[1:])
        order = np.argsort(rows, kind="stable")
        perm = concat_ranges(src_off[:-1][order], counts[order])
        tc, tr = np.concatenate(tok_codes), np.concatenate(tok_res)
        if not np.array_equal(perm, np.arange(perm.size)):
            tc, tr = tc[perm], tr[perm]
        idx.token_codes, idx.residuals, idx.codec = tc.astype(code_dtype), tr, codec
    return idx


def part_row_ranges(snap: Snapshot) -> list[tuple[str, int, int]]:
    """(part id, first table row, end row) of every part, in table order."""
    return [(p["id"], lo, hi) for p, (lo, hi) in zip(snap.manifest.parts, snap.part_rows, strict=True)]


def part_chunks(snap: Snapshot, lo: int, hi: int) -> list[tuple]:
    """The chunks of table rows ``[lo, hi)`` (one part), checked against their checksums."""
    snap.verify_rows(np.arange(lo, hi))
    return [(ch.tokens, ch.offsets, ch.rows - lo, ch.scales) for ch in snap.chunks
            if ch.rows.size and lo <= int(ch.rows[0]) < hi]


def update_prune_index(
    snap: Snapshot,
    n_centroids: int | None = None,
    iters: int = 4,
    seed: int = 0,
    progress: bool = False,
    nbits: int | None = RESIDUAL_BITS,
    rebuild: bool = False,
    device: str | torch.device | None = None,
) -> list[str]:
    """Build the prune index of every part of ``snap`` that lacks one (every part with ``rebuild``) and
    commit it; returns their ids.

    ``nbits`` is the bits per dimension of the residual codes (1, 2, 4 or 8; None: no residual codes,
    a smaller index whose pruned search skips the refine stage). The caller holds the store's writer
    lock. Entries and files of parts that left the index are removed. Parts already covered are left as
    they are unless ``rebuild`` (no rebuild when videos are added). ``device``: where k-means and the
    token assignment run (see :func:`build_part_index`).
    """
    build_device(device)  # refuse a missing device before anything is read
    root = snap.root
    current = read_prune_manifest(root) or {"format": PRUNE_FORMAT, "parts": {}, "params": {}}
    current["format"] = PRUNE_FORMAT
    params = {"n_centroids": n_centroids, "iters": iters, "seed": seed, "nbits": nbits}
    current["params"] = params
    live_parts = {p["id"] for p in snap.manifest.parts}
    ranges = part_row_ranges(snap)
    todo = [(pid, lo, hi) for pid, lo, hi in ranges if (rebuild or pid not in current["parts"]) and hi > lo]
    stale = {pid: e for pid, e in current["parts"].items() if pid not in live_parts}
    if not todo and not stale:
        return []
    built = []
    for pid, lo, hi in tqdm(todo, desc="prune index", unit="part", disable=not progress):
        idx = build_part_index(pid, part_chunks(snap, lo, hi), hi - lo, n_centroids, iters=iters, seed=seed,
                               nbits=nbits, device=device)
        current["parts"][pid] = save_part_index(root, idx)
        built.append(pid)
    for pid in stale:
        del current["parts"][pid]
    current["version"] = int(current.get("version", 0)) + 1
    current["store_version"] = snap.manifest.version
    current["time"] = time.time()
    write_prune_manifest(root, current)
    # files no manifest entry names any more (stale parts, leftovers of interrupted builds)
    named = {f for e in current["parts"].values() for key, f in e.items() if key in FILE_KEYS}
    for f in (root / PRUNE_DIR).glob("*.npy"):
        if f.name not in named:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    return built


def maintain_prune_index(root: Path, manifest: Manifest, previous: Snapshot | None, progress: bool
                         ) -> Snapshot | None:
    """Under the writer lock, after a commit of ``manifest``: extend an existing prune index to its new
    parts, with the parameters it was built with. Returns the snapshot of that version it opened to do so
    (None when the index has no prune index)."""
    man = read_prune_manifest(root)
    if man is None:
        return None
    p = man.get("params", {})
    snap = Snapshot(root, manifest, previous)
    update_prune_index(snap, n_centroids=p.get("n_centroids"), iters=p.get("iters", 4),
                       seed=p.get("seed", 0), progress=progress, nbits=p.get("nbits", 2))
    return snap
