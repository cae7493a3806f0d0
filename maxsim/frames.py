"""Sampling frames for the encoder and assembling clips: one decode pass feeds both the segmenter and the
frame sampler, then every segment becomes a :class:`~maxsim.types.Clip` with a JPEG thumbnail."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from maxsim.segment import Segmenter, load_segmenter
from maxsim.types import Clip, Segment
from maxsim.video import VideoError, iter_frames, probe

THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 85


def _resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
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
    bgr = cv2.cvtColor(_resize_max_side(frame_rgb, side), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a JPEG thumbnail of a {frame_rgb.shape} frame")
    return buf.tobytes()


class FrameSampler:
    """Keeps frames at ``fps`` (times on the grid ``k / fps``: the first decoded frame at or after each
    grid time), resized so that the longest side is at most ``max_side`` and converted to RGB uint8.

    Feed it every decoded frame in time order with :meth:`feed`; :meth:`clips` then gives each segment
    its sampled frames, at most ``max_frames`` (evenly subsampled). Memory: only the sampled frames at
    ``max_side`` are kept (about ``duration * fps * max_side**2 * 3 * 9/16`` bytes for 16:9 video).
    A sampler holds the state of one video; :meth:`fresh` gives an empty one with the same settings.
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
        self.reset()

    @property
    def name(self) -> str:
        return f"frames(fps={self.fps:g}, max_frames={self.max_frames}, max_side={self.max_side})"

    def __repr__(self) -> str:
        return f"FrameSampler(fps={self.fps!r}, max_frames={self.max_frames!r}, max_side={self.max_side!r})"

    def fresh(self) -> FrameSampler:
        """An empty sampler with the same settings."""
        return type(self)(fps=self.fps, max_frames=self.max_frames, max_side=self.max_side)

    def reset(self) -> None:
        """Forget every frame fed so far."""
        self._frames: list[np.ndarray] = []
        self._times: list[float] = []
        self._slot = -1

    @property
    def timestamps(self) -> np.ndarray:
        """Times (seconds) of the frames kept so far."""
        return np.asarray(self._times, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._times)

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        """Offer one decoded frame (BGR uint8); it is kept if it is the first one in its sampling slot."""
        slot = math.floor(float(t) * self.fps + 1e-6)
        if slot <= self._slot:
            return
        self._slot = slot
        small = _resize_max_side(frame_bgr, self.max_side)
        self._frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        self._times.append(float(t))

    def _indices(self, seg: Segment, last: bool) -> np.ndarray:
        ts = np.asarray(self._times, dtype=np.float64)
        lo = int(np.searchsorted(ts, seg.start, side="left"))
        hi = int(np.searchsorted(ts, seg.end, side="right" if last else "left"))
        if hi > lo:
            idx = np.arange(lo, hi)
            if len(idx) > self.max_frames:
                pick = np.linspace(0, len(idx) - 1, self.max_frames).round().astype(np.int64)
                idx = idx[pick]
            return idx
        # No sampled frame inside a very short segment: take the kept frame nearest to its middle.
        mid = 0.5 * (seg.start + seg.end)
        return np.array([int(np.argmin(np.abs(ts - mid)))])

    def clip(self, video_path: str | os.PathLike, seg: Segment, last: bool = False) -> tuple[Clip, bytes]:
        """The clip of one segment and its thumbnail (``last``: the segment ends the video, so a frame at
        its end time still belongs to it)."""
        if not self._times:
            raise ValueError("FrameSampler.clip: no frame was fed (feed the decoded frames first)")
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


def iter_clips(
    path: str | os.PathLike,
    segmenter: Segmenter | str = "scenes",
    sampler: FrameSampler | None = None,
) -> Iterator[tuple[Clip, bytes]]:
    """Decode ``path`` once, segment it and yield ``(clip, jpeg_thumbnail)`` per segment in time order.

    Every decoded frame feeds the segmenter's run (when it needs frames) and a fresh copy of ``sampler``
    (the given one only supplies the settings). The video's duration is the end of its last frame (its
    time plus its frame interval). Raises :class:`~maxsim.video.VideoError` for an unusable or
    truncated video, before any clip is yielded.

    Memory is bounded by the sampled frames (at the sampler's ``max_side``); the per-video state is
    built so that a later version can yield clips while decoding, once segments are final.
    """
    segmenter = load_segmenter(segmenter)
    sampler = (sampler or FrameSampler()).fresh()
    run = segmenter.start()
    feed_segmenter = segmenter.needs_frames
    spath = str(path)
    last_t = prev_t = None
    for t, frame in iter_frames(spath):
        if feed_segmenter:
            run.feed(t, frame)
        sampler.feed(t, frame)
        prev_t, last_t = last_t, t
    assert last_t is not None  # iter_frames raises when no frame decodes
    if prev_t is not None and last_t > prev_t:
        interval = last_t - prev_t
    else:
        info_fps = probe(spath).fps
        interval = 1.0 / info_fps if info_fps > 0 else 1.0 / 25.0
    duration = last_t + interval
    segments = run.finish(duration)
    if not segments:
        raise VideoError(spath, f"segmenter {segmenter.name} returned no segment")
    yield from sampler.clips(spath, segments)


__all__ = ["FrameSampler", "iter_clips", "jpeg_thumbnail"]
