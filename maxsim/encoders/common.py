"""Pieces the multi-vector encoders share: a clip's frames checked and thinned, and inputs grouped into
forward passes under a budget of padded sequence positions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maxsim.types import Clip, TokenGrid


def clip_frames(clip: Clip, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip's frames ``(n, H, W, 3)`` uint8 RGB and their times, thinned uniformly (first and last kept)
    to at most ``max_frames``. Raises ValueError naming the clip for frames of another shape or dtype, or
    a timestamp count that does not match."""
    frames = np.asarray(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0 or frames.dtype != np.uint8:
        raise ValueError(
            f"clip of {clip.video!r} [{clip.start:.2f}, {clip.end:.2f}]: frames must be (n>0, H, W, 3) "
            f"uint8 RGB, got {frames.dtype} {frames.shape}"
        )
    times = np.asarray(clip.timestamps, dtype=np.float64).reshape(-1)
    if len(times) != len(frames):
        raise ValueError(f"clip of {clip.video!r}: {len(frames)} frames but {len(times)} timestamps")
    if len(frames) > max_frames:
        keep = np.unique(np.linspace(0, len(frames) - 1, max(int(max_frames), 1)).round().astype(int))
        frames, times = frames[keep], times[keep]
    return frames, times


def token_budget_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest first, each at most ``budget`` padded positions
    (its size times its first, longest, item's length); an item longer than the budget is a batch alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_batch(seqs: Sequence[Sequence[int] | torch.Tensor], pad_id: int | None, left: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id sequences as one ``(n, longest)`` id matrix and its attention mask, padded with ``pad_id``
    (0 when the tokenizer has none) on the left or the right."""
    longest = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), longest), 0 if pad_id is None else pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for row, seq in enumerate(seqs):
        sl = slice(longest - len(seq), longest) if left else slice(0, len(seq))
        ids[row, sl] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, sl] = 1
    return ids, mask


class GridMemo:
    """The token grids of the clips of an encoder's latest ``encode_clips`` call, keyed by clip identity,
    so that ``token_grid(clip, n)`` right after encoding costs nothing (only that call's clips are kept)."""

    def __init__(self) -> None:
        self.grids: dict[int, tuple[Clip, TokenGrid]] = {}

    def reset(self) -> None:
        self.grids = {}

    def remember(self, clip: Clip, grid: TokenGrid) -> None:
        self.grids[id(clip)] = (clip, grid)  # the clip is held so that its id is not reused meanwhile

    def recall(self, clip: Clip) -> TokenGrid | None:
        got = self.grids.get(id(clip))
        return got[1] if got is not None and got[0] is clip else None
