"""A colour encoder named like a hub checkpoint whose vectors depend on the commit it was loaded at.

Loadable by spec in any process (a Ray worker too) as ``tests.pinned_encoder:PinnedHubEncoder``. Loaded
without a revision it takes ``PinnedHubEncoder.head``, the hub's newest commit: ``NEW`` in a fresh
process, so a worker that does not get the engine's pinned revision encodes with another model version.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maxsim.types import Clip
from tests.color_encoder import ColorEncoder

OLD, NEW = "a" * 40, "b" * 40
SPEC = "tests.pinned_encoder:PinnedHubEncoder"


class PinnedHubEncoder(ColorEncoder):
    head = NEW  # the commit the hub's main branch points at (a test may set it in its own process)
    loads: list[dict] = []  # the kwargs of each load in this process

    def __init__(self, revision: str | None = None, max_visual_tokens: int = 256,
                 device: str = "cpu") -> None:
        PinnedHubEncoder.loads.append({"revision": revision})
        self.revision = revision or PinnedHubEncoder.head
        self.name = f"pinned-hub:org/model@{self.revision}"
        self.settings = {"max_visual_tokens": max_visual_tokens, "device": device}

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        out = super().encode_clips(clips)
        # another commit, other weights: the same clip gives other vectors
        return out if self.revision == OLD else [torch.roll(v, 1, dims=1) for v in out]
