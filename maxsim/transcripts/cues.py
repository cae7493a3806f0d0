"""Subtitle cues and the parsers of subtitle files: SubRip (``.srt``), WebVTT (``.vtt``) and
Advanced SubStation Alpha / SubStation Alpha (``.ass`` / ``.ssa``).

A :class:`Cue` is a span of the video's time line (seconds, as players show it) with its plain text:
every parser strips markup (HTML-like tags, WebVTT class/voice/ruby/timestamp tags, ASS override blocks
and drawings), unescapes what the format escapes, and joins a cue's lines with one space. Speakers are
kept apart from the text, in :attr:`Cue.speaker`: a WebVTT voice (``<v Ann>Hello``) and an ASS event's
``Name`` field name the speaker; the text to search stays what is said. Cues with no text left are
dropped. Parsers return cues sorted by start time (ASS events need not be in order in a file).

Files are read robustly: a UTF-8 or UTF-16 byte-order mark, CRLF or CR line ends, Windows-1252 text
(a :class:`SubtitleWarning` says the file was not UTF-8) and missing blank lines between SRT cues are
all accepted. A cue that cannot be read (a malformed time, an end before its start) is skipped, and one
:class:`SubtitleWarning` per file names the file and the lines skipped. A file that is not subtitles
at all (binary, or text without a single cue timing) raises :class:`SubtitleFormatError` naming it.
An empty file, or a header with no cue, is a valid file with no cues.
"""

from __future__ import annotations

import html
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SUBTITLE_EXTENSIONS: dict[str, str] = {".srt": "srt", ".vtt": "vtt", ".webvtt": "vtt", ".ass": "ass",
                                       ".ssa": "ass"}
"""File extensions read as subtitles, and the parser each names (content can override: see
:func:`detect_format`)."""


@dataclass(frozen=True)
class Cue:
    """One subtitle or speech line: ``[start, end)`` in seconds of the video's time line, its plain
    text, and who says it when the source names a speaker."""

    start: float
    end: float
    text: str
    speaker: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


class SubtitleFormatError(ValueError):
    """A file that cannot be read as subtitles (binary, unknown format, or no cue timing anywhere)."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):  # keep it picklable (worker processes)
        return (type(self), (self.path, self.reason))


class SubtitleWarning(UserWarning):
    """Something in a subtitle file was skipped or guessed (bad cues, a legacy text encoding)."""


# -- text ---------------------------------------------------------------------------------------------
_WS = re.compile(r"\s+")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_ASS_BLOCK = re.compile(r"\{[^{}]*\}")
_VTT_TIMESTAMP_TAG = re.compile(r"<\d[\d:.]*>")
_VTT_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]*)>")
_VTT_RUBY_TEXT = re.compile(r"<rt(?:\.[^>]*)?>.*?(?:</rt>|(?=</ruby>)|$)", re.S)
_ASS_DRAWING = re.compile(r"\{[^{}]*\\p([0-9]+)[^{}]*\}")


def collapse(text: str) -> str:
    """``text`` with runs of whitespace (line breaks included) as one space, trimmed."""
    return _WS.sub(" ", text.replace("\u00a0", " ")).strip()


def strip_srt_markup(text: str) -> str:
    """Plain text of an SRT cue payload: HTML-like tags (``<i>``, ``<font ...>``) and the ASS override
    blocks some SRT files carry (``{\\an8}``) removed, lines joined."""
    return collapse(_ASS_BLOCK.sub("", _HTML_TAG.sub("", text)))


def strip_vtt_markup(text: str) -> tuple[str, str | None]:
    """Plain text and speaker of a WebVTT cue payload: class, bold/italic/underline, language, ruby
    (annotations dropped, base text kept) and karaoke timestamp tags removed; entities unescaped; the
    first voice tag's annotation (``<v Ann>``) returned as the speaker."""
    voice = _VTT_VOICE.search(text)
    speaker = collapse(html.unescape(voice.group(1))) or None if voice else None
    text = _VTT_RUBY_TEXT.sub("", text)
    text = _VTT_TIMESTAMP_TAG.sub("", text)
    text = _HTML_TAG.sub("", text)
    return collapse(html.unescape(text)), speaker


def strip_ass_markup(text: str) -> str:
    """Plain text of an ASS/SSA event's Text field: override blocks (``{\\i1}``), drawings (between
    ``{\\p1}`` and ``{\\p0}``) removed; ``\\N`` / ``\\n`` line breaks and ``\\h`` hard spaces as spaces."""
    out: list[str] = []
    drawing = False
    pos = 0
    for m in _ASS_BLOCK.finditer(text):
        if not drawing:
            out.append(text[pos:m.start()])
        p = _ASS_DRAWING.fullmatch(m.group(0))
        if p is not None:
            drawing = int(p.group(1)) > 0
        pos = m.end()
    if not drawing:
        out.append(text[pos:])
    plain = "".join(out).replace("\\N", " ").replace("\\n", " ").replace("\\h", " ")
    return collapse(plain)


# -- reading files ------------------------------------------------------------------------------------
def decode_text(data: bytes, source: str | os.PathLike | None = None) -> str:
    """Subtitle bytes as text: a UTF-8/UTF-16 byte-order mark decides the encoding, else UTF-8, else
    Windows-1252 (with a :class:`SubtitleWarning`). Raises :class:`SubtitleFormatError` for binary data."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise SubtitleFormatError(source, f"not valid UTF-16 despite its byte-order mark ({e})") from e
    if b"\x00" in data[:4096]:
        raise SubtitleFormatError(source, "binary data, not a subtitle text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    warnings.warn(f"{source}: not UTF-8; read as Windows-1252", SubtitleWarning, stacklevel=3)
    return text


def _lines(text: str) -> list[str]:
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")


class _Skipped:
    """Collects the cues a parser skips and reports them in one warning."""

    def __init__(self, source: str | os.PathLike | None):
        self.source = source
        self.items: list[str] = []

    def add(self, line_no: int, why: str) -> None:
        self.items.append(f"line {line_no}: {why}")

    def report(self) -> None:
        if self.items:
            shown = "; ".join(self.items[:5]) + (f"; and {len(self.items) - 5} more" if len(self.items) > 5
                                                  else "")
            warnings.warn(f"{self.source or 'subtitles'}: skipped {len(self.items)} bad cue"
                          f"{'s' if len(self.items) != 1 else ''} ({shown})", SubtitleWarning, stacklevel=3)


def _sorted(cues: Iterable[Cue]) -> list[Cue]:
    return sorted(cues, key=lambda c: (c.start, c.end))


def _check_span(start: float, end: float) -> str | None:
    if start < 0:
        return f"negative start time {start:.3f}"
    if end < start:
        return f"end {end:.3f} s before start {start:.3f} s"
    return None


# -- SubRip ---------------------------------------------------------------------------------------------
_SRT_TIME = r"(-?\d+)\s*:\s*(\d{1,2})\s*:\s*(\d{1,2})(?:\s*[,.:]\s*(\d{1,3}))?"
_SRT_TIMING = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*(.*)$")
_SRT_END = re.compile(rf"^{_SRT_TIME}")
_TIMING_LIKE = re.compile(r"-->")


def _hms(h: str, m: str, s: str, frac: str | None) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + (float("0." + frac) if frac else 0.0)


def parse_srt(text: str, source: str | os.PathLike | None = None) -> list[Cue]:
    """Cues of SubRip text. Numbering lines are optional and a missing blank line between cues is
    tolerated (a number followed by a timing line starts a new cue); position coordinates after the
    end time are ignored; ``,`` or ``.`` before the milliseconds both work."""
    lines = _lines(text)
    skipped = _Skipped(source)
    cues: list[Cue] = []
    timings = 0
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        m = _SRT_TIMING.match(line)
        if m is None:
            if _TIMING_LIKE.search(line):
                timings += 1
                skipped.add(i + 1, f"malformed timing {line.strip()!r}")
                i = _skip_payload(lines, i + 1)
                continue
            i += 1
            continue
        timings += 1
        start = _hms(*m.group(1, 2, 3, 4))
        end_m = _SRT_END.match(m.group(5).strip())
        j = _skip_payload(lines, i + 1)
        payload = lines[i + 1:j]
        if end_m is None:
            skipped.add(i + 1, f"malformed end time {m.group(5).strip()!r}")
        elif (why := _check_span(start, _hms(*end_m.groups()))) is not None:
            skipped.add(i + 1, why)
        else:
            plain = strip_srt_markup("\n".join(payload))
            if plain:
                cues.append(Cue(start, _hms(*end_m.groups()), plain))
        i = j
    if timings == 0 and any(line.strip() for line in lines):
        raise SubtitleFormatError(source, "no SubRip cue timing ('00:00:01,000 --> 00:00:02,000') found: "
                                          "not a subtitle file")
    skipped.report()
    return _sorted(cues)


def _skip_payload(lines: list[str], i: int) -> int:
    """Index of the line ending the payload that starts at ``i``: a blank line, a timing line, or a
    cue number directly followed by a timing line."""
    n = len(lines)
    while i < n:
        line = lines[i]
        if not line.strip() or _TIMING_LIKE.search(line):
            return i
        if line.strip().isdigit() and i + 1 < n and _TIMING_LIKE.search(lines[i + 1]):
            return i
        i += 1
    return i


# -- WebVTT -------------------------------------------------------------------------------------------
_VTT_TS = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_VTT_TIMING = re.compile(rf"^\s*{_VTT_TS}\s*-->\s*{_VTT_TS}(?:\s+.*)?$")


def _vtt_seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return _hms(h or "0", m, s, frac)


def parse_vtt(text: str, source: str | os.PathLike | None = None) -> list[Cue]:
    """Cues of WebVTT text. The ``WEBVTT`` header, its metadata lines, ``NOTE``, ``STYLE`` and ``REGION``
    blocks, cue identifiers and cue settings (position, line, align, ...) are read past. The first voice
    tag of a cue names its speaker (see :func:`strip_vtt_markup`). Rolling captions (auto-generated
    captions that repeat the previous cue's last line at the top of the next one) are de-duplicated:
    a line equal to the last line of the cue just before is dropped."""
    lines = _lines(text)
    if not lines or not lines[0].lstrip("\ufeff").startswith("WEBVTT"):
        raise SubtitleFormatError(source, "WebVTT file does not start with 'WEBVTT'")
    skipped = _Skipped(source)
    cues: list[Cue] = []
    prev_lines: list[str] = []
    i, n = 1, len(lines)
    while i < n and lines[i].strip():  # header metadata
        i += 1
    while i < n:
        if not lines[i].strip():
            i += 1
            continue
        j = i
        while j < n and lines[j].strip():
            j += 1
        block = lines[i:j]
        head = block[0].strip()
        i = j
        if head.startswith(("NOTE", "STYLE", "REGION")) and "-->" not in head:
            continue
        t = 0 if "-->" in block[0] else 1  # optional cue identifier line
        if t >= len(block) or "-->" not in block[t]:
            continue  # stray text: not a cue
        m = _VTT_TIMING.match(block[t])
        line_no = j - len(block) + t + 1
        if m is None:
            skipped.add(line_no, f"malformed timing {block[t].strip()!r}")
            continue
        start, end = _vtt_seconds(*m.group(1, 2, 3, 4)), _vtt_seconds(*m.group(5, 6, 7, 8))
        if (why := _check_span(start, end)) is not None:
            skipped.add(line_no, why)
            continue
        payload = block[t + 1:]
        plain_lines = [strip_vtt_markup(p) for p in payload]
        kept = [p for p in plain_lines if p[0]]
        if prev_lines and kept and kept[0][0] == prev_lines[-1]:
            kept = kept[1:]
        speaker = next((s for _, s in plain_lines if s), None)
        prev_lines = [p for p, _ in plain_lines if p]
        plain = collapse(" ".join(p for p, _ in kept))
        if plain:
            cues.append(Cue(start, end, plain, speaker))
    skipped.report()
    return _sorted(cues)


# -- ASS / SSA ----------------------------------------------------------------------------------------
_ASS_TIME = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?\s*$")
_DEFAULT_ASS_FORMAT = ["layer", "start", "end", "style", "name", "marginl", "marginr", "marginv", "effect",
                       "text"]


def parse_ass(text: str, source: str | os.PathLike | None = None) -> list[Cue]:
    """Cues of ASS/SSA text: the ``Dialogue:`` lines of the ``[Events]`` section, read with that
    section's ``Format:`` line (the text is the last field and may hold commas). ``Comment:`` lines,
    styles and script info are ignored; the ``Name`` field is the speaker."""
    lines = _lines(text)
    if not any(line.strip().lower() in ("[script info]", "[events]") for line in lines):
        raise SubtitleFormatError(source, "no [Script Info] or [Events] section: not an ASS/SSA file")
    skipped = _Skipped(source)
    cues: list[Cue] = []
    fields = _DEFAULT_ASS_FORMAT
    section = ""
    for no, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line.lower()
            continue
        if section != "[events]":
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "format":
            fields = [f.strip().lower() for f in rest.split(",")]
            if "text" not in fields or fields[-1] != "text" or not {"start", "end"} <= set(fields):
                raise SubtitleFormatError(source, f"line {no}: [Events] Format must name Start, End and "
                                                  f"end with Text, got {rest.strip()!r}")
            continue
        if key != "dialogue":
            continue
        values = rest.lstrip().split(",", len(fields) - 1)
        if len(values) != len(fields):
            skipped.add(no, f"{len(values)} fields, the Format line names {len(fields)}")
            continue
        row = dict(zip(fields, values, strict=True))
        ms, me = _ASS_TIME.match(row["start"]), _ASS_TIME.match(row["end"])
        if ms is None or me is None:
            skipped.add(no, f"malformed time {row['start'].strip()!r} / {row['end'].strip()!r}")
            continue
        start, end = _hms(*ms.groups()), _hms(*me.groups())
        if (why := _check_span(start, end)) is not None:
            skipped.add(no, why)
            continue
        plain = strip_ass_markup(row["text"])
        if plain:
            cues.append(Cue(start, end, plain, row.get("name", "").strip() or None))
    skipped.report()
    return _sorted(cues)


# -- any file ---------------------------------------------------------------------------------------
_PARSERS = {"srt": parse_srt, "vtt": parse_vtt, "ass": parse_ass}


def detect_format(text: str, path: str | os.PathLike | None = None) -> str:
    """``"srt"``, ``"vtt"`` or ``"ass"``: the content decides when it is unmistakable (a ``WEBVTT``
    header, an ``[Events]`` / ``[Script Info]`` section), else the file extension, else SubRip."""
    head = text.lstrip("\ufeff \t\r\n")[:4096].lower()
    if head.startswith("webvtt"):
        return "vtt"
    if "[script info]" in head or "[events]" in head:
        return "ass"
    if path is not None:
        fmt = SUBTITLE_EXTENSIONS.get(Path(path).suffix.lower())
        if fmt is not None and fmt != "vtt":  # a .vtt file without its header is not WebVTT: read as SRT
            return fmt
    return "srt"


def parse_subtitles(
    text: str, format: str | None = None, source: str | os.PathLike | None = None
) -> list[Cue]:
    """Cues of subtitle text in ``format`` (``"srt"``, ``"vtt"``, ``"ass"``; None: detected)."""
    fmt = format or detect_format(text, source)
    if fmt not in _PARSERS:
        raise ValueError(f"unknown subtitle format {fmt!r}; expected one of {sorted(_PARSERS)}")
    return _PARSERS[fmt](text, source)


def read_subtitles(path: str | os.PathLike, format: str | None = None) -> list[Cue]:
    """Cues of a subtitle file (format detected from content and extension unless given). Raises
    :class:`SubtitleFormatError` naming the file when it is missing, unreadable or not subtitles."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as e:
        raise SubtitleFormatError(p, "no such file") from e
    except IsADirectoryError as e:
        raise SubtitleFormatError(p, "is a directory, not a subtitle file") from e
    except OSError as e:
        raise SubtitleFormatError(p, f"cannot read it ({e.strerror or e})") from e
    return parse_subtitles(decode_text(data, p), format, p)
