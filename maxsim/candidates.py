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

import contextlib
import functools
import json
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from maxsim import kernels
from maxsim.kernels import merge_topk
from maxsim.kernels.cpu import bag_scores, concat_ranges, residual_scores
from maxsim.residuals import ResidualCodec
from maxsim.store import IndexFormatError, Snapshot, _write_atomic

PRUNE_DIR = "prune"
PRUNE_MANIFEST = "manifest.json"
PRUNE_FORMAT = 2
READ_FORMATS = (1, 2)
RESIDUAL_BITS = 2  # default bits per dimension of the residual codes
# A part is taken whole (no inverted lists read: every allowed segment is scored against its centroid
# bag) when the segments wanted from it are at least 1 / _WHOLE_PART of its allowed segments: the bag
# kernel scores a segment far faster than the probe finds one once the probe must widen that far.
_WHOLE_PART = 16
_FILE_KEYS = ("centroids", "list_offsets", "list_rows", "bag_offsets", "bag_codes", "tok_offsets",
              "token_codes", "residuals", "codec")

_ASSIGN_ELEMENTS = 1 << 22  # similarities (tokens x centroids) per assignment block


# -- k-means -------------------------------------------------------------------------------------------
def default_n_centroids(n_tokens: int) -> int:
    """Centroids for a part of ``n_tokens`` tokens: PLAID's rule, the power of two at or below
    ``16 * sqrt(n_tokens)``, but at least 32 tokens per centroid (finer centroids make the probed
    lists miss good segments in small parts), and within 16..65536."""
    if n_tokens <= 0:
        return 1
    c = min(16 * math.sqrt(n_tokens), n_tokens / 32)
    c = 2 ** math.floor(math.log2(max(1.0, c)))
    return int(min(max(c, 16), 65536, n_tokens))


def _dequant(x: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """Rows of a token matrix as float32 (int8 / fp8 rows times their scales)."""
    return x.float() if scales is None else x.float() * scales.float()[:, None]


def _assign(x: torch.Tensor, c: torch.Tensor, scales: torch.Tensor | None = None,
            codec: ResidualCodec | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """Index (a CPU tensor) of the most similar centroid for every row of ``x`` (blocked matmul, bf16
    inputs, on ``c``'s device) and, with a ``codec``, the packed residual codes of the rows."""
    dev = c.device
    cb = c.to(torch.bfloat16)
    out = torch.empty(x.shape[0], dtype=torch.int64)
    packed = None if codec is None else np.empty((x.shape[0], codec.bytes_per_token), dtype=np.uint8)
    rows = max(256, _ASSIGN_ELEMENTS // max(1, c.shape[0]))  # similarity blocks stay cache-sized
    if dev.type != "cpu":
        rows *= 16  # an accelerator wants larger blocks
    for lo in range(0, x.shape[0], rows):
        sc = None if scales is None else scales[lo : lo + rows].to(dev)
        blk = _dequant(x[lo : lo + rows].to(dev), sc)
        a = (blk.to(torch.bfloat16) @ cb.T).max(1).indices  # max(1) is several times faster than argmax
        out[lo : lo + blk.shape[0]] = a.cpu()
        if packed is not None:
            packed[lo : lo + blk.shape[0]] = codec.encode((blk - c[a]).cpu())
    return out, packed


def build_device(device: str | torch.device | None) -> torch.device:
    """The device a prune-index build runs on (None: the CPU), checked to exist here."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"prune index build on {device!r}: not a device ({e})") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"prune index build on {device!r}: expected 'cpu' or a CUDA device ('cuda', "
                         "'cuda:1')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"prune index build on {device!r}: this machine has no usable CUDA device")
    return dev


KMEANSPP_MAX = 1024  # largest k seeded with k-means++ (sequential: k passes over 8k rows)


def _kmeanspp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on unit rows (distance 1 - cosine)."""
    idx = [int(torch.randint(0, x.shape[0], (1,), generator=g))]
    d = (1 - x @ x[idx[0]]).clamp(min=0)
    for _ in range(1, k):
        total = float(d.sum())
        if total <= 0:
            i = int(torch.randint(0, x.shape[0], (1,), generator=g))
        else:
            i = int(torch.multinomial(d / total, 1, generator=g))
        idx.append(i)
        d = torch.minimum(d, (1 - x @ x[i]).clamp(min=0))
    return x[idx].clone()


def spherical_kmeans(
    x: torch.Tensor, n_centroids: int, iters: int = 8, seed: int = 0, device: str | torch.device | None = None
) -> torch.Tensor:
    """Unit centroids ``(n_centroids, dim)`` (float32, on the CPU) of the rows of ``x`` by cosine k-means.

    Initialised by k-means++ seeding on a sample of ``8 * n_centroids`` rows when ``n_centroids`` is at
    most :data:`KMEANSPP_MAX` (distinct random rows above, as FAISS does); an emptied cluster is
    re-seeded with a random row. The iterations run on ``device`` (default: the CPU); random choices
    are drawn on the CPU, so a seed picks the same rows on every device.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty (n, dim) matrix, got shape {tuple(x.shape)}")
    dev = build_device(device)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    k = min(int(n_centroids), n)
    x_cpu = torch.nn.functional.normalize(x.detach().cpu().float(), dim=1)
    if k <= KMEANSPP_MAX:
        c = _kmeanspp(x_cpu[torch.randperm(n, generator=g)[: 8 * k]], k, g).to(dev)
    else:
        c = x_cpu[torch.randperm(n, generator=g)[:k]].to(dev)
    xf = x_cpu.to(dev)
    for _ in range(iters):
        a = _assign(xf, c)[0].to(dev)
        sums = torch.zeros_like(c).index_add_(0, a, xf)
        counts = torch.bincount(a, minlength=k)
        empty = (counts == 0).cpu()
        if bool(empty.any()):
            sums[empty.to(dev)] = xf[torch.randint(0, n, (int(empty.sum()),), generator=g).to(dev)]
        c = torch.nn.functional.normalize(sums, dim=1)
    return c.cpu()


# -- one part's index ----------------------------------------------------------------------------------
@dataclass
class PartIndex:
    """Centroids, inverted lists, centroid bags and residual codes of one part (part-local rows)."""

    part_id: str
    centroids: torch.Tensor  # (n_centroids, dim) float32
    list_offsets: np.ndarray  # (n_centroids + 1,) int64
    list_rows: np.ndarray  # (total,) int32: part-local segment rows, per centroid
    bag_offsets: np.ndarray  # (n_segments + 1,) int64
    bag_codes: np.ndarray  # (total,) int16/int32: distinct centroids of each segment's tokens
    n_segments: int
    # residual codes (None for an index written before they existed, or built with nbits=None)
    tok_offsets: np.ndarray | None = None  # (n_segments + 1,) int64: each segment's tokens
    token_codes: np.ndarray | None = None  # (n_tokens,) int16/int32: each token's centroid
    residuals: np.ndarray | None = None  # (n_tokens, codec.bytes_per_token) uint8
    codec: ResidualCodec | None = None

    @property
    def has_residuals(self) -> bool:
        return self.codec is not None

    @functools.cached_property
    def nonempty_lists(self) -> torch.Tensor:
        """(n_centroids,) bool: centroids whose inverted list is not empty (the ones worth probing)."""
        return torch.from_numpy(np.diff(self.list_offsets) > 0)

    @functools.cached_property
    def n_nonempty_lists(self) -> int:
        return int(self.nonempty_lists.sum())

    @property
    def nbytes(self) -> int:
        n = int(self.centroids.numel() * 2 + self.list_offsets.nbytes + self.list_rows.nbytes
                + self.bag_offsets.nbytes + self.bag_codes.nbytes)
        if self.codec is not None:
            n += int(self.tok_offsets.nbytes + self.token_codes.nbytes + self.residuals.nbytes)
        return n


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
            picks.append(_dequant(tok[sel], None if sc is None else sc[sel]))
    sample = torch.nn.functional.normalize(torch.cat(picks).float(), dim=1)
    centroids = spherical_kmeans(sample, k, iters=iters, seed=seed, device=dev)
    c_dev = centroids.to(dev)
    codec = None
    if nbits is not None:
        a, _ = _assign(sample, c_dev)
        codec = ResidualCodec.train(sample - centroids[a], nbits)
    codes_all, rows_all, tok_codes, tok_res, tok_rows, tok_counts = [], [], [], [], [], []
    for tok, off, rows, sc in chunks:
        codes_t, packed = _assign(tok, c_dev, sc, codec)
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


# -- persistence ----------------------------------------------------------------------------------------
def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def prune_stamp(root: str | Path) -> int | None:
    """A value that changes whenever the prune manifest of the index at ``root`` is replaced."""
    try:
        st = os.stat(Path(root) / PRUNE_DIR / PRUNE_MANIFEST)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns ^ st.st_ino


def read_prune_manifest(root: str | Path) -> dict[str, Any] | None:
    """The committed prune manifest of the index at ``root``, or None when it has no prune index."""
    path = Path(root) / PRUNE_DIR / PRUNE_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise IndexFormatError(f"{path}: not a valid prune manifest ({e})") from e
    if not isinstance(data, dict) or data.get("format") not in READ_FORMATS or "parts" not in data:
        formats = " or ".join(map(str, READ_FORMATS))
        raise IndexFormatError(f"{path}: not a maxsim prune manifest of format {formats}")
    return data


def prune_summary(root: str | Path, part_ids: Sequence[str]) -> dict[str, Any] | None:
    """What the prune index of the index at ``root`` covers, for the index parts ``part_ids``: parts
    covered, bytes, centroids per part, residual bits and build time; None when it has none."""
    man = read_prune_manifest(root)
    if man is None:
        return None
    entries = [man["parts"][pid] for pid in part_ids if pid in man["parts"]]
    return {
        "parts_covered": len(entries),
        "parts": len(part_ids),
        "bytes": int(sum(e.get("bytes", 0) for e in entries)),
        "centroids_per_part": sorted({int(e["n_centroids"]) for e in entries}),
        "residual_bits": sorted({e.get("nbits") for e in entries}, key=lambda b: -1 if b is None else b),
        "format": man["format"],
        "updated": man.get("time"),
    }


def _write_prune_manifest(root: Path, data: dict[str, Any]) -> None:
    _write_atomic(root / PRUNE_DIR / PRUNE_MANIFEST, json.dumps(data, indent=1).encode(), "prune_manifest")


def save_part_index(root: Path, idx: PartIndex) -> dict[str, Any]:
    """Write a part's files (fsynced, not yet committed); returns its prune-manifest entry."""
    d = root / PRUNE_DIR
    d.mkdir(parents=True, exist_ok=True)
    stem = f"{idx.part_id}-{uuid.uuid4().hex[:8]}"
    arrays = {
        "centroids": idx.centroids.to(torch.float16).numpy(),
        "list_offsets": idx.list_offsets,
        "list_rows": idx.list_rows,
        "bag_offsets": idx.bag_offsets,
        "bag_codes": idx.bag_codes,
    }
    if idx.codec is not None:
        arrays.update(tok_offsets=idx.tok_offsets, token_codes=idx.token_codes, residuals=idx.residuals,
                      codec=idx.codec.to_arrays())
    files = {key: f"{stem}.{key}.npy" for key in arrays}
    for key, arr in arrays.items():
        _save_npy(d / files[key], arr)
    return {
        **files,
        "n_segments": idx.n_segments,
        "n_centroids": int(idx.centroids.shape[0]),
        "n_entries": int(idx.list_rows.size),
        "nbits": None if idx.codec is None else idx.codec.nbits,
        "bytes": idx.nbytes,
    }


def _check_ids(path: Path, codes: np.ndarray, n_centroids: int, part_id: str) -> None:
    """Centroid ids read from ``path`` must index the part's centroids (the kernels trust them)."""
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= n_centroids):
        raise IndexFormatError(f"{path}: centroid ids of part {part_id} fall outside its {n_centroids} "
                               "centroids")


def load_part_index(root: Path, part_id: str, entry: dict[str, Any], dim: int) -> PartIndex:
    """Open a part's files memory-mapped, checking them against the manifest entry."""
    d = root / PRUNE_DIR
    keys = _FILE_KEYS[:5] + (_FILE_KEYS[5:] if entry.get("residuals") else ())
    try:
        a = {key: np.load(d / entry[key], mmap_mode="r") for key in keys}
    except (OSError, ValueError, KeyError) as e:
        raise IndexFormatError(f"{d}: prune files of part {part_id} are missing or unreadable ({e})") from e
    c, off, rows, bag_off, bag_codes = (a[key] for key in _FILE_KEYS[:5])
    n_seg = int(entry["n_segments"])
    if (c.ndim != 2 or c.shape[1] != dim or off.shape != (c.shape[0] + 1,) or int(off[-1]) != rows.size
            or bag_off.shape != (n_seg + 1,) or int(bag_off[-1]) != bag_codes.size
            or bag_codes.size != rows.size):
        raise IndexFormatError(
            f"{d / entry['centroids']}: prune files of part {part_id} do not fit together "
            f"(centroids {c.shape}, dim {dim}, offsets {off.shape}, {rows.size} list entries, "
            f"{n_seg} segments, bag offsets {bag_off.shape}, {bag_codes.size} bag entries)"
        )
    _check_ids(d / entry["bag_codes"], bag_codes, c.shape[0], part_id)
    idx = PartIndex(part_id, torch.from_numpy(np.asarray(c, dtype=np.float32)), off, rows, bag_off,
                    bag_codes, n_seg)
    if "residuals" in a:
        try:
            codec = ResidualCodec.from_arrays(a["codec"], int(entry["nbits"]), dim)
        except (ValueError, KeyError, TypeError) as e:
            raise IndexFormatError(f"{d / entry['codec']}: residual codec of part {part_id} is unusable ({e})"
                                   ) from e
        t_off, t_codes, res = a["tok_offsets"], a["token_codes"], a["residuals"]
        if (t_off.shape != (n_seg + 1,) or t_codes.shape != (int(t_off[-1]),)
                or res.shape != (t_codes.size, codec.bytes_per_token)):
            raise IndexFormatError(
                f"{d / entry['residuals']}: residual codes of part {part_id} do not fit together "
                f"(token offsets {t_off.shape} for {n_seg} segments, {t_codes.size} token codes, residuals "
                f"{res.shape}, expected {codec.bytes_per_token} bytes per token)"
            )
        _check_ids(d / entry["token_codes"], t_codes, c.shape[0], part_id)
        idx.tok_offsets, idx.token_codes, idx.residuals, idx.codec = t_off, t_codes, res, codec
    return idx


# -- snapshot helpers -----------------------------------------------------------------------------------
def _part_row_ranges(snap: Snapshot) -> list[tuple[str, int, int]]:
    """(part id, first table row, end row) of every part, in table order."""
    return [(p["id"], lo, hi) for p, (lo, hi) in zip(snap.manifest.parts, snap.part_rows, strict=True)]


def _part_chunks(snap: Snapshot, lo: int, hi: int) -> list[tuple]:
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
    ranges = _part_row_ranges(snap)
    todo = [(pid, lo, hi) for pid, lo, hi in ranges if (rebuild or pid not in current["parts"]) and hi > lo]
    stale = {pid: e for pid, e in current["parts"].items() if pid not in live_parts}
    if not todo and not stale:
        return []
    built = []
    for pid, lo, hi in tqdm(todo, desc="prune index", unit="part", disable=not progress):
        idx = build_part_index(pid, _part_chunks(snap, lo, hi), hi - lo, n_centroids, iters=iters, seed=seed,
                               nbits=nbits, device=device)
        current["parts"][pid] = save_part_index(root, idx)
        built.append(pid)
    for pid in stale:
        del current["parts"][pid]
    current["version"] = int(current.get("version", 0)) + 1
    current["store_version"] = snap.manifest.version
    current["time"] = time.time()
    _write_prune_manifest(root, current)
    # files no manifest entry names any more (stale parts, leftovers of interrupted builds)
    named = {f for e in current["parts"].values() for key, f in e.items() if key in _FILE_KEYS}
    for f in (root / PRUNE_DIR).glob("*.npy"):
        if f.name not in named:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    return built


# -- search ---------------------------------------------------------------------------------------------
@dataclass
class PruneStats:
    """What a pruned search read, summed over its queries."""

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
        for pid, lo, hi in _part_row_ranges(snap):
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
            if _WHOLE_PART * n_next >= n_allowed:  # cheaper to bag-score the whole part than to probe
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
    ) -> tuple[torch.Tensor, torch.Tensor, PruneStats]:
        """Top k (scores, table rows) of each query, ``(n_q, k)`` each, best first, ties by lower row.

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
        stats = PruneStats(queries=n_q)
        live_bytes = int(int(self._counts[allowed].sum()) * self._dim * self._elem)
        stats.total_token_bytes = live_bytes * n_q
        s_ex, r_ex = self._exhaustive(q, q_off, allowed, k, stats)
        out_s = torch.full((n_q, k), float("-inf"))
        out_r = torch.full((n_q, k), -1, dtype=torch.int64)
        indexed = [np.arange(lo, hi)[allowed[lo:hi]] for lo, hi, idx in self.parts if idx is not None]
        indexed = np.concatenate(indexed) if indexed else np.zeros(0, dtype=np.int64)
        for i in range(n_q):
            qi = q[int(q_off[i]) : int(q_off[i + 1])]
            qo = torch.tensor([0, qi.shape[0]])
            if indexed.size <= n_candidates:  # few allowed segments (small index, tight filter): all
                rows, st = indexed, PruneStats()
            else:
                rows, st = self.candidates(qi, allowed, n_candidates, nprobe, n_refine)
            stats.candidates += rows.size
            stats.list_bytes += st.list_bytes
            stats.centroid_bytes += st.centroid_bytes
            stats.refined += st.refined
            stats.residual_bytes += st.residual_bytes
            s, r = self._exact(qi, qo, rows, k, stats)
            s = torch.cat([s, s_ex[i : i + 1]], 1)
            r = torch.cat([r, r_ex[i : i + 1]], 1)
            out_s[i], out_r[i] = (x[0] for x in merge_topk(s, r, k))
        return out_s, out_r, stats
