"""Sampling frames for the encoder: a :class:`FrameSampler` recipe and its per-video :class:`SampleRun`,
which turns a segment into a :class:`~maxsim.types.Clip` with a JPEG thumbnail."""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence

import cv2
import numpy as np

from maxsim.types import Clip, Segment

THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 85


def resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = max(h, w)
    if side <= max_side:
        return img
    s = max_side / side
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def jpeg_thumbnail(
    frame_rgb: np.ndarray, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY
) -> bytes:
    """JPEG bytes of an RGB frame resized so that its longest side is at most ``side`` pixels."""
    bgr = cv2.cvtColor(resize_max_side(frame_rgb, side), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a JPEG thumbnail of a {frame_rgb.shape} frame")
    return buf.tobytes()


class FrameSampler:
    """How frames are sampled for the encoder: at ``fps`` (times on the grid ``k / fps``: the first decoded
    frame at or after each grid time), resized so that the longest side is at most ``max_side``, at most
    ``max_frames`` per segment (evenly subsampled).

    A recipe only: it holds no frames and can be shared. :meth:`start` begins the run over one video
    (:class:`SampleRun`), which is fed the decoded frames and hands out each segment's clip.
    """

    def __init__(self, fps: float = 2.0, max_frames: int = 16, max_side: int = 448):
        fps, max_frames, max_side = float(fps), int(max_frames), int(max_side)
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"FrameSampler: fps must be a positive number, got {fps!r}")
        if max_frames < 1:
            raise ValueError(f"FrameSampler: max_frames must be at least 1, got {max_frames!r}")
        if max_side < 16:
            raise ValueError(f"FrameSampler: max_side must be at least 16 pixels, got {max_side!r}")
        self.fps = fps
        self.max_frames = max_frames
        self.max_side = max_side

    @property
    def name(self) -> str:
        return f"frames(fps={self.fps:g}, max_frames={self.max_frames}, max_side={self.max_side})"

    def __repr__(self) -> str:
        return f"FrameSampler(fps={self.fps!r}, max_frames={self.max_frames!r}, max_side={self.max_side!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrameSampler) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def start(self) -> SampleRun:
        """A run of this recipe over one video: feed it the video's decoded frames in time order."""
        return SampleRun(self)

    def fresh(self) -> FrameSampler:
        """The recipe itself (it holds no state). Kept for code written when a sampler held one video's
        frames; use :meth:`start` for a run."""
        return self


class SampleRun:
    """The frames kept from one video by a :class:`FrameSampler` recipe.

    Feed it every decoded frame in time order with :meth:`feed`; :meth:`clip` then gives a segment its
    sampled frames. Memory: only the sampled frames at ``max_side`` are kept (about
    ``duration * fps * max_side**2 * 3 * 9/16`` bytes for 16:9 video), and :meth:`discard_before` drops
    those of segments already handed out.
    """

    def __init__(self, recipe: FrameSampler) -> None:
        self.recipe = recipe
        self._frames: list[np.ndarray] = []
        self._times: list[float] = []
        self._slot = -1

    @property
    def timestamps(self) -> np.ndarray:
        """Times (seconds) of the frames kept so far."""
        return np.asarray(self._times, dtype=np.float64)

    @property
    def n_frames(self) -> int:
        """How many frames are kept so far. (No ``__len__``: an empty run must stay truthy.)"""
        return len(self._times)

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        """Offer one decoded frame (BGR uint8); it is kept if it is the first one in its sampling slot."""
        slot = math.floor(float(t) * self.recipe.fps + 1e-6)
        if slot <= self._slot:
            return
        self._slot = slot
        small = resize_max_side(frame_bgr, self.recipe.max_side)
        self._frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        self._times.append(float(t))

    def discard_before(self, t: float) -> None:
        """Drop the kept frames before time ``t`` except the latest of them (a very short segment that
        follows may still need it as its nearest frame)."""
        i = bisect.bisect_left(self._times, t) - 1
        if i > 0:
            del self._frames[:i]
            del self._times[:i]

    def _indices(self, seg: Segment, last: bool) -> np.ndarray:
        ts = np.asarray(self._times, dtype=np.float64)
        lo = int(np.searchsorted(ts, seg.start, side="left"))
        hi = int(np.searchsorted(ts, seg.end, side="right" if last else "left"))
        if hi > lo:
            idx = np.arange(lo, hi)
            if len(idx) > self.recipe.max_frames:
                pick = np.linspace(0, len(idx) - 1, self.recipe.max_frames).round().astype(np.int64)
                idx = idx[pick]
            return idx
        # No sampled frame inside a very short segment: take the kept frame nearest to its middle.
        mid = 0.5 * (seg.start + seg.end)
        return np.array([int(np.argmin(np.abs(ts - mid)))])

    def clip(self, video_path: str | os.PathLike, seg: Segment, last: bool = False) -> tuple[Clip, bytes]:
        """The clip of one segment and its thumbnail (``last``: the segment ends the video, so a frame at
        its end time still belongs to it)."""
        if not self._times:
            raise ValueError("SampleRun.clip: no frame was fed (feed the decoded frames first)")
        idx = self._indices(seg, last)
        frames = np.stack([self._frames[i] for i in idx])
        times = np.asarray([self._times[i] for i in idx], dtype=np.float64)
        clip = Clip(
            video=str(video_path), start=float(seg.start), end=float(seg.end), frames=frames, timestamps=times
        )
        return clip, jpeg_thumbnail(frames[len(frames) // 2])

    def clips(self, video_path: str | os.PathLike, segments: Sequence[Segment]) -> list[tuple[Clip, bytes]]:
        """One ``(clip, jpeg_thumbnail)`` per segment, in the given order (see :class:`FrameSampler`)."""
        n = len(segments)
        return [self.clip(video_path, s, last=(i == n - 1)) for i, s in enumerate(segments)]


__all__ = ["FrameSampler", "SampleRun", "jpeg_thumbnail", "resize_max_side"]
