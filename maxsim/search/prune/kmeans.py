"""Spherical k-means over token vectors and the nearest-centroid assignment the prune index is built from."""

from __future__ import annotations

import math

import numpy as np
import torch

from maxsim.search.prune.residuals import ResidualCodec

ASSIGN_ELEMENTS = 1 << 22  # similarities (tokens x centroids) per assignment block


def default_n_centroids(n_tokens: int) -> int:
    """Centroids for a part of ``n_tokens`` tokens: PLAID's rule, the power of two at or below
    ``16 * sqrt(n_tokens)``, but at least 32 tokens per centroid (finer centroids make the probed
    lists miss good segments in small parts), and within 16..65536."""
    if n_tokens <= 0:
        return 1
    c = min(16 * math.sqrt(n_tokens), n_tokens / 32)
    c = 2 ** math.floor(math.log2(max(1.0, c)))
    return int(min(max(c, 16), 65536, n_tokens))


def dequant(x: torch.Tensor, scales: torch.Tensor | None) -> torch.Tensor:
    """Rows of a token matrix as float32 (int8 / fp8 rows times their scales)."""
    return x.float() if scales is None else x.float() * scales.float()[:, None]


def assign(x: torch.Tensor, c: torch.Tensor, scales: torch.Tensor | None = None,
            codec: ResidualCodec | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """Index (a CPU tensor) of the most similar centroid for every row of ``x`` (blocked matmul, bf16
    inputs, on ``c``'s device) and, with a ``codec``, the packed residual codes of the rows."""
    dev = c.device
    cb = c.to(torch.bfloat16)
    out = torch.empty(x.shape[0], dtype=torch.int64)
    packed = None if codec is None else np.empty((x.shape[0], codec.bytes_per_token), dtype=np.uint8)
    rows = max(256, ASSIGN_ELEMENTS // max(1, c.shape[0]))  # similarity blocks stay cache-sized
    if dev.type != "cpu":
        rows *= 16  # an accelerator wants larger blocks
    for lo in range(0, x.shape[0], rows):
        sc = None if scales is None else scales[lo : lo + rows].to(dev)
        blk = dequant(x[lo : lo + rows].to(dev), sc)
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
        a = assign(xf, c)[0].to(dev)
        sums = torch.zeros_like(c).index_add_(0, a, xf)
        counts = torch.bincount(a, minlength=k)
        empty = (counts == 0).cpu()
        if bool(empty.any()):
            sums[empty.to(dev)] = xf[torch.randint(0, n, (int(empty.sum()),), generator=g).to(dev)]
        c = torch.nn.functional.normalize(sums, dim=1)
    return c.cpu()
