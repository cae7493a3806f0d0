"""Decoding a media file's audio with PyAV into mono float32 samples at the rate a speech model wants,
block by block, each block placed on the visual time line (see :mod:`maxsim.transcripts.media`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from maxsim.transcripts.media import MediaError, open_media, require_av, timeline_origin


@dataclass(frozen=True)
class AudioBlock:
    """Consecutive mono samples of a media file's audio starting ``start`` seconds into the video."""

    start: float
    samples: np.ndarray  # (n,) float32 in [-1, 1]
    sampling_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sampling_rate

    @property
    def end(self) -> float:
        return self.start + self.duration


def has_audio(path: str | os.PathLike) -> bool:
    """Whether the media file has an audio stream."""
    with open_media(path) as container:
        return bool(container.streams.audio)


def iter_audio(path: str | os.PathLike, sampling_rate: int = 16000, block_s: float = 1800.0,
               stream: int | None = None) -> Iterator[AudioBlock]:
    """The audio of ``path`` (its first audio stream, or stream index ``stream``) as mono float32 blocks of
    ``block_s`` seconds (the last one shorter), resampled to ``sampling_rate``. Gaps in the stream are
    not filled: a block's samples are consecutive from its start. Raises :class:`MediaError` when the
    file has no audio stream or its audio cannot be decoded."""
    if sampling_rate <= 0 or block_s <= 0:
        raise ValueError(f"sampling_rate and block_s must be > 0, got {sampling_rate} and {block_s}")
    av = require_av()
    block_len = max(int(round(block_s * sampling_rate)), 1)
    with open_media(path) as container:
        streams = container.streams.audio
        if stream is None:
            if not streams:
                raise MediaError(path, "has no audio stream")
            chosen = streams[0]
        else:
            chosen = next((s for s in streams if s.index == stream), None)
            if chosen is None:
                raise MediaError(path, f"has no audio stream with index {stream}")
        origin = timeline_origin(container)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
        pending: list[np.ndarray] = []
        n_pending = 0
        block_start: float | None = None
        try:
            frames = container.decode(chosen)
            for frame in _with_flush(frames):
                if block_start is None and frame is not None and frame.time is not None:
                    block_start = max(float(frame.time) - origin, 0.0)
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                    n_pending += pending[-1].shape[0]
                while n_pending >= block_len:
                    data = np.concatenate(pending)
                    yield AudioBlock(block_start or 0.0, data[:block_len].copy(), sampling_rate)
                    block_start = (block_start or 0.0) + block_len / sampling_rate
                    pending, n_pending = [data[block_len:]], data.shape[0] - block_len
        except av.FFmpegError as e:
            raise MediaError(path, f"decoding audio stream {chosen.index} failed ({e})") from e
        if n_pending:
            yield AudioBlock(block_start or 0.0, np.concatenate(pending), sampling_rate)


def _with_flush(frames: Iterator) -> Iterator:
    """The decoded frames, then None (which flushes the resampler)."""
    yield from frames
    yield None


def load_audio(path: str | os.PathLike, sampling_rate: int = 16000, stream: int | None = None
               ) -> AudioBlock:
    """All the audio of ``path`` as one block (see :func:`iter_audio`); an empty block when the stream
    has no samples."""
    blocks = list(iter_audio(path, sampling_rate, block_s=1e9, stream=stream))
    if not blocks:
        return AudioBlock(0.0, np.zeros(0, np.float32), sampling_rate)
    return AudioBlock(blocks[0].start, np.concatenate([b.samples for b in blocks]), sampling_rate)
