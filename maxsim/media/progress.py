"""Progress inside one video's ingest: seconds decoded out of its duration, segments cut and encoded, and an
estimate of the time left, so that a long video does not sit at ``0/1`` for its whole ingest.

The decode side (:func:`~maxsim.media.worker.isolated_clips`, or :func:`~maxsim.media.clips.iter_clips` in
this process) moves ``decoded_s`` and ``segments_decoded``; the encode side moves ``segments_encoded``. A
:class:`VideoProgress` is handed to a callback after every change: the CLI draws a tqdm bar per video
(:class:`VideoProgressBar`), the server's ingest jobs copy :meth:`VideoProgress.to_dict` into the job status.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm


@dataclass
class VideoProgress:
    """Where the ingest of one video stands.

    ``duration`` is the timeline the container announces (0.0 until the decoder has opened the file, or
    when it announces none); ``decoded_s`` the end of the last frame decoded. The ETA assumes the rest of the
    video decodes and encodes at the rate seen so far: the slower of the two sides sets the pace, since
    the decoder reads at most a few segments ahead of the encoder.
    """

    path: str
    duration: float = 0.0
    decoded_s: float = 0.0
    segments_decoded: int = 0
    segments_encoded: int = 0
    done: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the video's ingest started."""
        return time.monotonic() - self.started

    @property
    def fraction(self) -> float:
        """Share of the video processed, 0 to 1: seconds decoded, held back to the share of decoded segments
        that were encoded (the encoder, not the decoder, is usually the slow side)."""
        if self.done:
            return 1.0
        if self.duration <= 0:
            return 0.0
        part = min(1.0, self.decoded_s / self.duration)
        if self.segments_decoded:
            part *= min(1.0, self.segments_encoded / self.segments_decoded)
        return part

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds left (None until something measurable was done)."""
        if self.done:
            return 0.0
        part = self.fraction
        if part <= 0.0:
            return None
        return self.elapsed_s * (1.0 - part) / part

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape the server's job status shows under ``video``."""
        eta = self.eta_s
        return {
            "path": self.path,
            "duration_s": round(self.duration, 3),
            "decoded_s": round(min(self.decoded_s, self.duration) if self.duration else self.decoded_s, 3),
            "segments_decoded": self.segments_decoded,
            "segments_encoded": self.segments_encoded,
            "fraction": round(self.fraction, 4),
            "elapsed_s": round(self.elapsed_s, 3),
            "eta_s": None if eta is None else round(eta, 1),
        }


ProgressCallback = Callable[[VideoProgress], None]


class VideoProgressBar:
    """A tqdm bar per video, in seconds of video: ``decoded/duration`` with its rate and ETA, and the
    segments encoded as a postfix. Call it with each :class:`VideoProgress` update; the bar of a video
    closes when its progress says ``done`` (or when the next video starts)."""

    def __init__(self, position: int = 1) -> None:
        self.position = position
        self._bar: tqdm | None = None
        self._path: str | None = None

    def __call__(self, p: VideoProgress) -> None:
        if self._path != p.path:
            self.close()
            self._path = p.path
            self._bar = tqdm(total=None, desc=os.path.basename(p.path)[:40], unit="s", position=self.position,
                             leave=False, bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s "
                             "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        bar = self._bar
        assert bar is not None
        if p.duration and bar.total != p.duration:
            bar.total = p.duration
        seen = min(p.decoded_s, p.duration) if p.duration else p.decoded_s
        bar.n = round(seen, 1)
        bar.set_postfix_str(f"segments {p.segments_encoded} encoded/{p.segments_decoded} cut", refresh=False)
        bar.refresh()
        if p.done:
            self.close()

    def close(self) -> None:
        """Close the current bar, if any."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._path = None, None


__all__ = ["ProgressCallback", "VideoProgress", "VideoProgressBar"]
