"""The single decode pass: decode a video once, feed every frame to the segmenter's run and to the frame
sampler's run, and hand out each segment's clip as soon as it is final."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from maxsim.errors import VideoError
from maxsim.media.avframes import iter_decoded
from maxsim.media.frames import FrameSampler
from maxsim.media.segment import Segmenter, load_segmenter
from maxsim.media.spans import SegmentLimitError, check_count
from maxsim.types import Clip, Segment


def iter_clips(
    path: str | os.PathLike,
    segmenter: Segmenter | str = "scenes",
    sampler: FrameSampler | None = None,
    prefetch: int = 8,
    on_frame: Callable[[float], None] | None = None,
    on_start: Callable[[float], None] | None = None,
) -> Iterator[tuple[Clip, bytes]]:
    """Decode ``path`` once, segment it and yield ``(clip, jpeg_thumbnail)`` per segment in time order.

    Every decoded frame feeds the segmenter's run (when it needs frames) and a run of the ``sampler`` recipe
    (default ``FrameSampler()``). The video's duration is the
    end of its last frame (its time plus its frame interval): the ``end`` of the last clip with the
    built-in segmenters. About ``prefetch`` frames are decoded ahead in a background thread (0: none).

    Streaming: when the segmenter's run offers ``final_segments(t)`` (the built-in ones do: fixed spans
    as soon as they are decoded, scenes once a cut with long enough scenes on both sides is found),
    clips are yielded during decoding and their frames are freed, so memory holds the sampled frames
    of the segments still open rather than of the whole video. The clips are the same either way.

    ``on_frame(t)`` is called with the time of every decoded frame (progress; a watchdog), ``on_start(s)``
    once the file is open with the timeline its container announces (seconds, 0.0 if none).

    Raises :class:`~maxsim.errors.VideoError` for an unusable video at the first ``next()``, for a
    truncated one (that the file's structure does not reveal) when decoding stops, possibly after some
    clips were yielded, and for one that would make more than
    :data:`~maxsim.media.spans.MAX_SEGMENTS_PER_VIDEO` segments: consumers must not commit a video's
    clips before the iterator is exhausted.
    """
    try:
        yield from _clips(path, segmenter, sampler, prefetch, on_frame, on_start)
    except SegmentLimitError as e:
        raise VideoError(str(path), str(e)) from None


def _clips(path: str | os.PathLike, segmenter: Segmenter | str, sampler: FrameSampler | None, prefetch: int,
           on_frame: Callable[[float], None] | None, on_start: Callable[[float], None] | None
           ) -> Iterator[tuple[Clip, bytes]]:
    segmenter = load_segmenter(segmenter)
    sampler = (sampler if sampler is not None else FrameSampler()).start()
    run = segmenter.start()
    feed_segmenter = segmenter.needs_frames
    final_segments = getattr(run, "final_segments", None)
    spath = str(path)
    emitted: list[Segment] = []
    feed_decoded = getattr(run, "feed_decoded", None)
    # Frames stay in the decoder's format; a full-size BGR image is made only where one is asked for.
    with iter_decoded(spath, prefetch=prefetch) as frames:  # closed (decode thread stopped) if abandoned
        if on_start is not None:
            on_start(frames.timeline)
        for t, frame in frames:
            if on_frame is not None:
                on_frame(t)
            if feed_decoded is not None and feed_segmenter:
                feed_decoded(t, frame)
            elif feed_segmenter:
                run.feed(t, frame.bgr())
            if not sampler.wants(t):
                continue
            sampler.feed(t, frame)  # scales itself to the kept size
            if final_segments is not None:  # checked at the sampling rate
                final = final_segments(t)
                check_count(len(final), t)
                while len(emitted) < len(final):
                    seg = final[len(emitted)]
                    item = sampler.clip(spath, seg)
                    emitted.append(seg)
                    sampler.discard_before(seg.end)
                    yield item
    segments = run.finish(frames.duration)
    check_count(len(segments), frames.duration)
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


__all__ = ["iter_clips"]
