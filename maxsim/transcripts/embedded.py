"""Subtitle streams inside a video file (MP4 ``mov_text``, Matroska/WebM SubRip, WebVTT and ASS/SSA),
read with their cue times through PyAV (see :mod:`maxsim.transcripts.media`).

Packets are read, not decoded: each packet of a text subtitle stream is one cue, its presentation time
and duration the cue's span, its payload parsed here per codec (so the result does not depend on the
PyAV version's subtitle decoder API). Markup is stripped as for sidecar files (:mod:`.cues`). A packet
without a duration ends where the next cue starts, or :data:`DEFAULT_CUE_SECONDS` later for the last
one (capped at the stream's end when known). Cues are put on the video's time line (see
:mod:`~maxsim.transcripts.media`): one that starts before the first video frame starts at 0, one that
ends before it is dropped. Bitmap subtitles (DVD, PGS, DVB) have no text and are
listed with ``text=False``; they are never chosen. Reading a stream reads through the file's packets
(I/O, no decoding).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from maxsim.transcripts.cues import Cue, collapse, strip_ass_markup, strip_srt_markup, strip_vtt_markup
from maxsim.transcripts.languages import language_rank
from maxsim.transcripts.media import (
    MediaError,
    disposition_flags,
    language_of,
    open_media,
    require_av,
    timeline_origin,
)

# FFmpeg codec names (descriptor and decoder spellings) of the text subtitle codecs read here.
TEXT_CODECS: dict[str, str] = {
    "mov_text": "mov_text", "subrip": "srt", "srt": "srt", "webvtt": "vtt", "ass": "ass", "ssa": "ass",
    "text": "text",
}
DEFAULT_CUE_SECONDS = 4.0


@dataclass(frozen=True)
class SubtitleTrack:
    """A subtitle stream of a media file."""

    index: int  # stream index in the container
    codec: str  # FFmpeg codec name
    language: str | None  # as tagged (ISO 639-2 such as "eng" in Matroska and MP4), None if untagged
    title: str | None = None
    default: bool = False
    forced: bool = False
    hearing_impaired: bool = False

    @property
    def text(self) -> bool:
        """Whether this is a text stream that can be read (not a bitmap one)."""
        return self.codec in TEXT_CODECS


def _track(stream: Any) -> SubtitleTrack:
    ctx = stream.codec_context
    codec = str(getattr(ctx, "name", None) or "unknown")
    meta = stream.metadata or {}
    flags = disposition_flags(stream)
    return SubtitleTrack(int(stream.index), codec, language_of(stream), meta.get("title") or None,
                         "default" in flags, "forced" in flags, "hearing_impaired" in flags)


def list_subtitle_tracks(path: str | os.PathLike) -> list[SubtitleTrack]:
    """The subtitle streams of a media file, in stream order."""
    with open_media(path) as container:
        return [_track(s) for s in container.streams.subtitles]


def track_rank(track: SubtitleTrack, languages: Sequence[str] | None = None) -> tuple:
    """Sort key of a track, lower wins: a readable text track; the preferred language (untagged after
    the preferred ones, others last; see :func:`~maxsim.transcripts.languages.language_rank`); not
    forced; flagged default; stream order."""
    return (not track.text, language_rank(track.language, languages), track.forced, not track.default,
            track.index)


def choose_track(tracks: Sequence[SubtitleTrack], languages: Sequence[str] | None = None
                 ) -> SubtitleTrack | None:
    """The text track to read among ``tracks``; None when none is a readable text track."""
    best = min(tracks, key=lambda t: track_rank(t, languages), default=None)
    return best if best is not None and best.text else None


# -- payloads -----------------------------------------------------------------------------------------
def _utf8(data: bytes) -> str:
    if data.startswith((b"\xfe\xff", b"\xff\xfe")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8", errors="replace")


def _mov_text(data: bytes) -> str:
    """3GPP timed text: a 16-bit big-endian length, the text, then style boxes."""
    if len(data) < 2:
        return ""
    (n,) = struct.unpack(">H", data[:2])
    return collapse(_utf8(data[2:2 + n]))


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 0
    while i + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[i:i + 8])
        if size < 8 or i + size > len(data):
            break
        out.append((typ, data[i + 8:i + size]))
        i += size
    return out


def _webvtt(data: bytes) -> tuple[str, str | None]:
    """A WebVTT cue payload: plain text (Matroska, WebM), or ISO-BMFF ``vttc`` boxes holding a ``payl``
    box (MP4's ``wvtt``)."""
    boxes = _boxes(data)
    if boxes and all(t in (b"vttc", b"vtte", b"vtta") for t, _ in boxes):
        parts = [body for t, cue in boxes if t == b"vttc" for bt, body in _boxes(cue) if bt == b"payl"]
        text = "\n".join(_utf8(p) for p in parts)
    else:
        text = _utf8(data)
    return strip_vtt_markup(text)


def _ass(data: bytes) -> tuple[str, str | None]:
    """An ASS event as Matroska and FFmpeg store it: ``ReadOrder,Layer,Style,Name,MarginL,MarginR,
    MarginV,Effect,Text``; an old-style ``Dialogue:`` line is read too."""
    text = _utf8(data).strip()
    if text.lower().startswith("dialogue:"):
        fields = text.partition(":")[2].split(",", 9)  # Layer,Start,End,Style,Name,...,Text
        return (strip_ass_markup(fields[9]), fields[4].strip() or None) if len(fields) == 10 else ("", None)
    fields = text.split(",", 8)
    if len(fields) != 9:
        return strip_ass_markup(text), None
    return strip_ass_markup(fields[8]), fields[3].strip() or None


def payload_text(codec: str, data: bytes) -> tuple[str, str | None]:
    """Plain text and speaker of one subtitle packet of ``codec`` (an FFmpeg codec name)."""
    kind = TEXT_CODECS.get(codec)
    if kind == "mov_text":
        return _mov_text(data), None
    if kind == "vtt":
        return _webvtt(data)
    if kind == "ass":
        return _ass(data)
    if kind in ("srt", "text"):
        return strip_srt_markup(_utf8(data)), None
    raise ValueError(f"subtitle codec {codec!r} is not a text codec read here ({sorted(TEXT_CODECS)})")


# -- reading ------------------------------------------------------------------------------------------
def read_track(path: str | os.PathLike, track: int | SubtitleTrack) -> list[Cue]:
    """The cues of one subtitle stream (a stream index or a :class:`SubtitleTrack`), sorted by start."""
    index = track.index if isinstance(track, SubtitleTrack) else int(track)
    with open_media(path) as container:
        stream = next((s for s in container.streams if s.index == index), None)
        if stream is None or stream.type != "subtitle":
            raise MediaError(path, f"has no subtitle stream with index {index}")
        info = _track(stream)
        if not info.text:
            raise MediaError(path, f"subtitle stream {index} is {info.codec!r}, not a text codec "
                                   f"({', '.join(sorted(TEXT_CODECS))})")
        origin = timeline_origin(container)
        tb = stream.time_base
        stream_end = None
        if stream.duration is not None and tb is not None:
            stream_end = float(((stream.start_time or 0) + stream.duration) * tb) - origin
        elif container.duration is not None:
            stream_end = container.duration / 1_000_000
        raw: list[tuple[float, float | None, str, str | None]] = []
        try:
            for packet in container.demux(stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None or not packet.size:
                    continue
                text, speaker = payload_text(info.codec, bytes(packet))
                if not text:
                    continue
                ptb = packet.time_base or tb
                start = float(ts * ptb) - origin
                dur = float(packet.duration * ptb) if packet.duration else None
                raw.append((start, dur, text, speaker))
        except (require_av().FFmpegError, OSError) as e:  # a damaged file: say which
            raise MediaError(path, f"reading subtitle stream {index} failed ({e})") from e
    return _spans(raw, stream_end)


def _spans(raw: list[tuple[float, float | None, str, str | None]], stream_end: float | None) -> list[Cue]:
    raw.sort(key=lambda r: r[0])
    cues = []
    for i, (start, dur, text, speaker) in enumerate(raw):
        if dur is None:
            nxt = next((r[0] for r in raw[i + 1:] if r[0] > start), None)
            end = nxt if nxt is not None else start + DEFAULT_CUE_SECONDS
            if nxt is None and stream_end is not None and stream_end > start:
                end = min(end, stream_end)
        else:
            end = start + dur
        if end < 0.0 or (end == 0.0 and start < 0.0):
            continue  # shown only before the first video frame
        start = max(start, 0.0)
        cues.append(Cue(start, max(end, start), text, speaker))
    return cues


def read_embedded_subtitles(path: str | os.PathLike, languages: Sequence[str] | None = None
                            ) -> tuple[SubtitleTrack, list[Cue]] | None:
    """The chosen text subtitle stream of a media file (see :func:`choose_track`) and its cues; None
    when the file has no text subtitle stream."""
    track = choose_track(list_subtitle_tracks(path), languages)
    if track is None:
        return None
    return track, read_track(path, track)
