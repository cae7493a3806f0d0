"""Sampling frames for the encoder: a :class:`FrameSampler` recipe and its per-video :class:`SampleRun`,
which turns a segment into a :class:`~maxsim.types.Clip` with a JPEG thumbnail."""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from maxsim.types import Clip, FrameSize, Segment

THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 85
# Longest side of the kept frames when neither the user (max_side) nor the encoder (frame_size) says.
DEFAULT_MAX_SIDE = 448


def resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    size = target_size(h, w, max_side=int(max_side))
    return img if size is None else cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def target_size(height: int, width: int, max_side: int | None = None, size: FrameSize | None = None
                ) -> tuple[int, int] | None:
    """The ``(width, height)`` :func:`scale_frame` gives a ``height`` x ``width`` frame; None when the frame
    is kept at its size (it is never scaled up)."""
    h, w = int(height), int(width)
    if max_side is not None or size is None:
        side = DEFAULT_MAX_SIDE if max_side is None else int(max_side)
        if max(h, w) <= side:
            return None
        s = side / max(h, w)
        return max(1, round(w * s)), max(1, round(h * s))
    s = size.scale(h, w)
    if s >= 1.0:
        return None
    # rounded down, so the result stays within the limits (the 1e-6 absorbs float error on exact sides)
    return max(1, math.floor(w * s + 1e-6)), max(1, math.floor(h * s + 1e-6))


def scale_frame(img: np.ndarray, max_side: int | None = None, size: FrameSize | None = None) -> np.ndarray:
    """``img`` scaled down by pixel area (never up, aspect kept): to a longest side of at most
    ``max_side`` when given, else within ``size`` (see :class:`~maxsim.types.FrameSize`), else to
    :data:`DEFAULT_MAX_SIDE`."""
    new = target_size(img.shape[0], img.shape[1], max_side, size)
    return img if new is None else cv2.resize(img, new, interpolation=cv2.INTER_AREA)


@runtime_checkable
class ScalableFrame(Protocol):
    """A decoded frame that makes its own scaled copies (:class:`maxsim.media.avframes.DecodedFrame`):
    the sampler asks for the kept size only, without a full-size image."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def bgr(self) -> np.ndarray: ...

    def rgb_scaled(self, width: int, height: int) -> np.ndarray: ...


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
    frame at or after each grid time), at most ``max_frames`` per segment (evenly subsampled), scaled down
    (never up) and converted to RGB uint8. Frames from the ingest's decoder are scaled in their YUV planes
    and converted with their own colour matrix (:meth:`maxsim.media.avframes.DecodedFrame.rgb_scaled`);
    full-size BGR images by pixel area (:func:`scale_frame`); the two agree to about a level.

    Frame size: a longest side of ``max_side`` pixels when it is set; otherwise the size the encoder wants
    (``frame_size``, a :class:`~maxsim.types.FrameSize` that the ingest sets with :meth:`sized` from the
    encoder's ``frame_size(max_frames)``: ColQwen3 from its visual-token budget, SigLIP/CLIP from their
    processor); otherwise a longest side of :data:`DEFAULT_MAX_SIDE`.

    A recipe only: it holds no frames and can be shared. :meth:`start` begins the run over one video
    (:class:`SampleRun`), which is fed the decoded frames and hands out each segment's clip. An index
    records the recipe it was created with (:meth:`to_record`, :meth:`from_record`).
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

    @property
    def name(self) -> str:
        """The recipe as the settings key of each video records it: a video sampled under another name
        is re-encoded by the next ingest."""
        head = f"frames(fps={self.fps:g}, max_frames={self.max_frames}"
        if self.max_side is None and self.frame_size is not None:
            return f"{head}, size={self.frame_size.describe()})"
        return f"{head}, max_side={DEFAULT_MAX_SIDE if self.max_side is None else self.max_side})"

    def __repr__(self) -> str:
        extra = "" if self.frame_size is None else f", frame_size={self.frame_size!r}"
        return (f"FrameSampler(fps={self.fps!r}, max_frames={self.max_frames!r}, "
                f"max_side={self.max_side!r}{extra})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrameSampler) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def replace(self, **changes: Any) -> FrameSampler:
        """A copy with some of ``fps``, ``max_frames``, ``max_side``, ``frame_size`` changed (checked)."""
        unknown = sorted(set(changes) - {"fps", "max_frames", "max_side", "frame_size"})
        if unknown:
            raise TypeError(f"FrameSampler.replace: unknown setting(s) {', '.join(unknown)}")
        now = {"fps": self.fps, "max_frames": self.max_frames, "max_side": self.max_side,
               "frame_size": self.frame_size}
        return FrameSampler(**{**now, **changes})

    def sized(self, size: FrameSize | None) -> FrameSampler:
        """This recipe with its frames sized to ``size`` (what the encoder wants, see
        :func:`maxsim.encoders.record.encoder_frame_size`) unless it sets ``max_side`` (which wins) or
        ``size`` is None (then it is unchanged)."""
        if self.max_side is not None or size is None:
            return self
        return self.replace(frame_size=size)

    def to_record(self) -> dict[str, Any]:
        """The recipe as plain values, as an index's manifest records it (``max_side`` None: sized to the
        encoder)."""
        out: dict[str, Any] = {"fps": self.fps, "max_frames": self.max_frames, "max_side": self.max_side}
        if self.frame_size is not None:
            out["frame_size"] = self.frame_size.to_dict()
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> FrameSampler:
        """The recipe an index records (:meth:`to_record`). None, an index created before recipes were
        recorded: the default of that time, ``FrameSampler(fps=2, max_frames=16, max_side=448)``, so
        that its videos keep their settings key. Raises ValueError for a record that is not a recipe."""
        if record is None:
            return cls(fps=2.0, max_frames=16, max_side=DEFAULT_MAX_SIDE)
        try:
            size = record.get("frame_size")
            return cls(fps=record["fps"], max_frames=record["max_frames"], max_side=record.get("max_side"),
                       frame_size=None if size is None else FrameSize(**size))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a frame-sampling recipe: {record!r} ({e})") from None

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
    sampled frames. Memory: only the sampled frames are kept, at their kept size (``max_side=448``: about
    0.34 MB a 16:9 frame; ColQwen3's default budget over 16 frames: about 2 MB), and
    :meth:`discard_before` drops those of segments already handed out.
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

    def wants(self, t: float) -> bool:
        """Whether a frame at time ``t`` would be kept by :meth:`feed` (the first one in its slot)."""
        return math.floor(float(t) * self.recipe.fps + 1e-6) > self._slot

    def feed(self, t: float, frame: np.ndarray | ScalableFrame) -> None:
        """Offer one decoded frame (BGR uint8, or a :class:`ScalableFrame` that scales itself); it is kept
        if it is the first one in its sampling slot."""
        slot = math.floor(float(t) * self.recipe.fps + 1e-6)
        if slot <= self._slot:
            return
        self._slot = slot
        if isinstance(frame, np.ndarray):
            rgb = cv2.cvtColor(scale_frame(frame, self.recipe.max_side, self.recipe.frame_size),
                               cv2.COLOR_BGR2RGB)
        else:
            size = target_size(frame.height, frame.width, self.recipe.max_side, self.recipe.frame_size)
            rgb = cv2.cvtColor(frame.bgr(), cv2.COLOR_BGR2RGB) if size is None else frame.rgb_scaled(*size)
        self._frames.append(rgb)
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


__all__ = [
    "DEFAULT_MAX_SIDE", "FrameSampler", "SampleRun", "ScalableFrame", "jpeg_thumbnail", "resize_max_side",
    "scale_frame", "target_size",
]
