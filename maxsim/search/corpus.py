"""Where a snapshot's tokens live when they are scored: :class:`Corpus`.

A corpus places every chunk of a snapshot (a run of segments of one part whose tokens are one matrix) on
the search device. On the CPU the chunks are the snapshot's memory maps, used as they are: nothing is
copied. Parts are immutable, so a corpus opened with an older one as ``previous`` reuses what that one
placed for the parts both share, and places only new parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maxsim.index.snapshot import Snapshot


@dataclass
class PlacedChunk:
    """One chunk of a snapshot, placed: its tokens, CSR offsets and (int8 / fp8) scales on the corpus's
    device, the host copy of the offsets, and the snapshot table rows of its segments."""

    tokens: torch.Tensor  # (n_tokens, dim), storage dtype
    offsets: torch.Tensor  # (n_segments + 1,) int64, on the device
    host_offsets: torch.Tensor  # the same on the CPU
    scales: torch.Tensor | None  # (n_tokens,) float32 for int8 / fp8 storage
    rows: np.ndarray  # table rows of these segments in the snapshot
    part: str  # id of the part it belongs to

    @property
    def n_segments(self) -> int:
        return int(self.rows.size)


def parse_device(device: str | torch.device | None) -> torch.device:
    """The search device a user named: ``"cpu"`` (default)."""
    dev = torch.device("cpu" if device is None else device)
    if dev.type != "cpu":
        raise ValueError(f"search device {str(device)!r}: only 'cpu' is supported by this corpus")
    return dev


class Corpus:
    """The tokens of one snapshot, placed on ``device`` for scoring (see the module docstring)."""

    def __init__(self, snapshot: Snapshot, device: str | torch.device | None = "cpu",
                 previous: Corpus | None = None) -> None:
        self.snapshot = snapshot
        self.device = parse_device(device)
        self.chunks: list[PlacedChunk] = []
        part_ids = [p["id"] for p in snapshot.manifest.parts]
        for ch in snapshot.chunks:
            self.chunks.append(PlacedChunk(ch.tokens, ch.offsets, ch.offsets, ch.scales, ch.rows,
                                           part_ids[ch.part]))

    @property
    def dim(self) -> int:
        return int(self.snapshot.manifest.dim)

    def stats(self) -> dict[str, Any]:
        """How the corpus is placed: ``{"device", "path", "resident_bytes", ...}``."""
        return {"device": str(self.device), "path": "mapped"}
