"""Small media files with subtitle streams (and optionally audio) written with PyAV, for the transcript
tests: no FFmpeg command-line tool and no stored media. Subtitle packets are muxed as the containers
store them: MP4 ``mov_text`` (16-bit length + UTF-8), Matroska SubRip and WebVTT (the cue text) and ASS
(``ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text``)."""

from __future__ import annotations

import fractions
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Track:
    """A subtitle stream to write: codec (``mov_text``, ``subrip``, ``webvtt``, ``ass``) and cues
    ``(start, end, payload text)``; ``end=None`` writes a packet without a duration."""

    codec: str
    cues: list[tuple[float, float | None, str]]
    language: str | None = None
    title: str | None = None
    forced: bool = False
    default: bool = False
    speakers: list[str] = field(default_factory=list)  # ASS Name field per cue


def _payload(track: Track, i: int, text: str) -> bytes:
    if track.codec == "mov_text":
        data = text.encode()
        return struct.pack(">H", len(data)) + data
    if track.codec == "ass":
        name = track.speakers[i] if i < len(track.speakers) else ""
        return f"{i},0,Default,{name},0,0,0,,{text}".encode()
    return text.encode()


def write_media(path: str | Path, tracks: list[Track], video_s: float = 3.0, fps: int = 10,
                audio_s: float | None = None, video_start: float = 0.0) -> Path:
    """Write ``path`` (MP4 or Matroska by its suffix): a tiny MPEG-4 video of ``video_s`` seconds whose
    first frame is at ``video_start``, the subtitle ``tracks``, and ``audio_s`` seconds of a 440 Hz tone
    (AAC) when given."""
    import av

    path = Path(path)
    out = av.open(str(path), "w")
    v = out.add_stream("mpeg4", rate=fps)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
    subs = []
    for t in tracks:
        s = out.add_mux_stream(t.codec)
        s.time_base = fractions.Fraction(1, 1000)
        if t.language:
            s.metadata["language"] = t.language
        if t.title:
            s.metadata["title"] = t.title
        disp = av.stream.Disposition(0)
        if t.forced:
            disp |= av.stream.Disposition.forced
        if t.default:
            disp |= av.stream.Disposition.default
        s.disposition = disp
        subs.append(s)
    a = None
    if audio_s is not None:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    for i in range(int(round(video_s * fps))):
        img = np.full((48, 64, 3), (i * 9) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i + int(round(video_start * fps))
        frame.time_base = fractions.Fraction(1, fps)
        for p in v.encode(frame):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    if a is not None and audio_s is not None:
        rate, n = 16000, int(audio_s * 16000)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for off in range(0, n, 1024):
            chunk = tone[off:off + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, off + int(round(video_start * rate))
            frame.time_base = fractions.Fraction(1, rate)
            for p in a.encode(frame):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    for t, s in zip(tracks, subs, strict=True):
        for i, (start, end, text) in enumerate(t.cues):
            pkt = av.Packet(_payload(t, i, text))
            pkt.stream = s
            pkt.time_base = s.time_base
            pkt.pts = pkt.dts = int(round(start * 1000))
            if end is not None:
                pkt.duration = int(round((end - start) * 1000))
            out.mux(pkt)
    out.close()
    return path
