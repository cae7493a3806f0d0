"""Sampling frames for the encoder and assembling clips: one decode pass feeds both the segmenter and the
frame sampler, then every segment becomes a :class:`~maxsim.types.Clip` with a JPEG thumbnail."""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from maxsim.segment import Segmenter, load_segmenter
from maxsim.types import Clip, FrameSize, Segment
from maxsim.video import VideoError, iter_frames

THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 85
# Longest side of the kept frames when neither the user (max_side) nor the encoder (frame_size) says.
DEFAULT_MAX_SIDE = 448


def _resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = max(h, w)
    if side <= max_side:
        return img
    s = max_side / side
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def scale_frame(img: np.ndarray, max_side: int | None = None, size: FrameSize | None = None) -> np.ndarray:
    """``img`` scaled down (never up, aspect kept): to a longest side of at most ``max_side`` when given,
    else within ``size`` (see :class:`~maxsim.types.FrameSize`), else to :data:`DEFAULT_MAX_SIDE`."""
    if max_side is not None or size is None:
        return _resize_max_side(img, DEFAULT_MAX_SIDE if max_side is None else int(max_side))
    h, w = img.shape[:2]
    s = size.scale(h, w)
    if s >= 1.0:
        return img
    # rounded down, so the result stays within the limits (the 1e-6 absorbs float error on exact sides)
    new = (max(1, math.floor(w * s + 1e-6)), max(1, math.floor(h * s + 1e-6)))
    return cv2.resize(img, new, interpolation=cv2.INTER_AREA)


def encoder_frame_size(encoder: object, n_frames: int) -> FrameSize | None:
    """What ``encoder.frame_size(n_frames)`` says (None when it has no such method or no preference).
    Raises TypeError naming the encoder when it returns something else than a FrameSize or None."""
    method = getattr(encoder, "frame_size", None)
    if method is None:
        return None
    size = method(int(n_frames))
    if size is not None and not isinstance(size, FrameSize):
        raise TypeError(
            f"encoder {getattr(encoder, 'name', type(encoder).__name__)!r}: frame_size() returned "
            f"{type(size).__name__}; expected maxsim.types.FrameSize or None"
        )
    return size


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
    grid time), scaled down and converted to RGB uint8.

    Frame size: ``max_side`` (pixels of the longest side) when the user sets it; otherwise the size the
    encoder wants (``frame_size``, a :class:`~maxsim.types.FrameSize`, set by :meth:`for_encoder` from
    the encoder's ``frame_size(max_frames)``: ColQwen3 from its visual-token budget, SigLIP/CLIP from
    their processor); otherwise a longest side of :data:`DEFAULT_MAX_SIDE`. Frames are never upscaled.

    Feed it every decoded frame in time order with :meth:`feed`; :meth:`clips` then gives each segment
    its sampled frames, at most ``max_frames`` (evenly subsampled). Memory: only the sampled frames of
    the open segments are kept, at their kept size (``max_side=448``: about 0.34 MB a 16:9 frame; ColQwen3's
    default budget over 16 frames: about 2 MB). A sampler holds the state of one video; :meth:`fresh`
    gives an empty one with the same settings.
    """

    def __init__(self, fps: float = 2.0, max_frames: int = 16, max_side: int | None = None,
                 frame_size: FrameSize | None = None):
        fps, max_frames = float(fps), int(max_frames)
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"FrameSampler: fps must be a positive number, got {fps!r}")
        if max_frames < 1:
            raise ValueError(f"FrameSampler: max_frames must be at least 1, got {max_frames!r}")
        if max_side is not None:
            max_side = int(max_side)
            if max_side < 16:
                raise ValueError(f"FrameSampler: max_side must be at least 16 pixels, got {max_side!r}")
        if frame_size is not None and not isinstance(frame_size, FrameSize):
            raise TypeError(f"FrameSampler: frame_size must be a FrameSize or None, got {frame_size!r}")
        self.fps = fps
        self.max_frames = max_frames
        self.max_side = max_side
        self.frame_size = frame_size
        self.reset()

    @property
    def name(self) -> str:
        head = f"frames(fps={self.fps:g}, max_frames={self.max_frames}"
        if self.max_side is None and self.frame_size is not None:
            return f"{head}, size={self.frame_size.describe()})"
        return f"{head}, max_side={DEFAULT_MAX_SIDE if self.max_side is None else self.max_side})"

    def __repr__(self) -> str:
        extra = "" if self.frame_size is None else f", frame_size={self.frame_size!r}"
        return (f"FrameSampler(fps={self.fps!r}, max_frames={self.max_frames!r}, "
                f"max_side={self.max_side!r}{extra})")

    def fresh(self) -> FrameSampler:
        """An empty sampler with the same settings."""
        return type(self)(fps=self.fps, max_frames=self.max_frames, max_side=self.max_side,
                          frame_size=self.frame_size)

    def for_encoder(self, encoder: object) -> FrameSampler:
        """An empty sampler with these settings whose frames are sized for ``encoder``: its
        ``frame_size(max_frames)`` when it has one and no ``max_side`` was set (``max_side`` wins)."""
        if self.max_side is not None:
            return self.fresh()
        size = encoder_frame_size(encoder, self.max_frames)
        return type(self)(fps=self.fps, max_frames=self.max_frames, max_side=None,
                          frame_size=size if size is not None else self.frame_size)

    def reset(self) -> None:
        """Forget every frame fed so far."""
        self._frames: list[np.ndarray] = []
        self._times: list[float] = []
        self._slot = -1

    @property
    def timestamps(self) -> np.ndarray:
        """Times (seconds) of the frames kept so far."""
        return np.asarray(self._times, dtype=np.float64)

    @property
    def n_frames(self) -> int:
        """How many frames are kept so far. (No ``__len__``: an empty sampler must stay truthy.)"""
        return len(self._times)

    def feed(self, t: float, frame_bgr: np.ndarray) -> None:
        """Offer one decoded frame (BGR uint8); it is kept if it is the first one in its sampling slot."""
        slot = math.floor(float(t) * self.fps + 1e-6)
        if slot <= self._slot:
            return
        self._slot = slot
        small = scale_frame(frame_bgr, self.max_side, self.frame_size)
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
    prefetch: int = 8,
) -> Iterator[tuple[Clip, bytes]]:
    """Decode ``path`` once, segment it and yield ``(clip, jpeg_thumbnail)`` per segment in time order.

    Every decoded frame feeds the segmenter's run (when it needs frames) and a fresh copy of ``sampler``
    (the given one only supplies the settings; default ``FrameSampler()``). The video's duration is the
    end of its last frame (its time plus its frame interval): the ``end`` of the last clip with the
    built-in segmenters. ``prefetch`` frames are decoded ahead in a background thread (0: none).

    Streaming: when the segmenter's run offers ``final_segments(t)`` (the built-in ones do: fixed spans
    as soon as they are decoded, scenes once a cut with long enough scenes on both sides is found),
    clips are yielded during decoding and their frames are freed, so memory holds the sampled frames
    of the segments still open rather than of the whole video. The clips are the same either way.

    Raises :class:`~maxsim.video.VideoError` for an unusable video at the first ``next()``, and for a
    truncated one (that the file's structure does not reveal) when decoding stops, possibly after some
    clips were yielded: consumers must not commit a video's clips before the iterator is exhausted.
    """
    segmenter = load_segmenter(segmenter)
    sampler = (sampler if sampler is not None else FrameSampler()).fresh()
    run = segmenter.start()
    feed_segmenter = segmenter.needs_frames
    final_segments = getattr(run, "final_segments", None)
    spath = str(path)
    emitted: list[Segment] = []
    with iter_frames(spath, prefetch=prefetch) as frames:  # closed (decode thread stopped) if abandoned
        for t, frame in frames:
            if feed_segmenter:
                run.feed(t, frame)
            kept = sampler.n_frames
            sampler.feed(t, frame)
            if final_segments is not None and sampler.n_frames > kept:  # check at the sampling rate
                final = final_segments(t)
                while len(emitted) < len(final):
                    seg = final[len(emitted)]
                    item = sampler.clip(spath, seg)
                    emitted.append(seg)
                    sampler.discard_before(seg.end)
                    yield item
    segments = run.finish(frames.duration)
    if not segments:
        raise VideoError(spath, f"segmenter {segmenter.name} returned no segment")
    for a, b in zip(segments[:-1], segments[1:], strict=True):
        if not (a.start < a.end <= b.start + 1e-9) or not (b.start < b.end):
            raise ValueError(
                f"segmenter {segmenter.name} returned overlapping, empty or unordered segments for {spath}: "
                f"{a} then {b}"
            )
    if segments[: len(emitted)] != emitted:
        raise RuntimeError(
            f"segmenter {segmenter.name} changed segments it had reported final for {spath} "
            f"(final_segments must return a growing prefix of what finish returns)"
        )
    n = len(segments)
    for i in range(len(emitted), n):
        yield sampler.clip(spath, segments[i], last=(i == n - 1))


__all__ = ["DEFAULT_MAX_SIDE", "FrameSampler", "encoder_frame_size", "iter_clips", "jpeg_thumbnail",
           "scale_frame"]
