"""A deterministic encoder with distinct scores everywhere: random unit tokens seeded by what they encode.

A clip's tokens depend on its video file's name and start time, a text's on the text, so two engines (or
two search paths) over the same videos see the same vectors, and no two segments tie.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from maxsim.types import Clip


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _unit(seed: int, n: int, dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed % (2**63))
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)


class RandomEncoder:
    name = "test-random"
    dim = 24

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        return [_unit(_seed("text", t), 5, self.dim) for t in texts]

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        return [_unit(_seed(Path(c.video).name, round(c.start, 3)), 3 + int(c.start) % 4, self.dim)
                for c in clips]
