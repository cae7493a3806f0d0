"""Subtitle files next to a video ("sidecars"): finding them, choosing one, and fingerprinting them.

A sidecar of ``talk.mp4`` sits in the same folder and is named ``talk[.TAG...].EXT`` with EXT one of
``.srt``, ``.vtt``, ``.webvtt``, ``.ass``, ``.ssa`` (any case) and optional dot-separated tags, as
media players name them: a language (``en``, ``pt-BR``, ``eng``, ``English``) and flags ``forced``,
``sdh`` / ``hi`` / ``cc`` (for the hearing impaired: sounds described too) and ``default``. A name
with a tag that is neither (``talk.part2.srt``) belongs to another video and is not a sidecar.

Which one wins (:func:`choose_sidecar`), first difference decides:

1. the language, by the caller's preference list (``languages=("en", "de")``); an untagged sidecar
   comes after the preferred languages and before all others; without a preference, no rank;
2. forced subtitles last (they hold only the lines in a foreign language, not the speech);
3. without a language preference, the untagged sidecar (``talk.srt``) before tagged ones;
4. one flagged ``default`` first;
5. the format: SRT, then WebVTT, then ASS/SSA; then the file name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maxsim.transcripts.cues import SUBTITLE_EXTENSIONS
from maxsim.transcripts.languages import is_language_tag, language_rank

_FORMAT_RANK = {"srt": 0, "vtt": 1, "ass": 2}
_HEARING_IMPAIRED = frozenset({"sdh", "cc", "hi"})
_FLAGS = frozenset({"forced", "default"}) | _HEARING_IMPAIRED


@dataclass(frozen=True)
class Sidecar:
    """A subtitle file found next to a video, with what its name says about it."""

    path: Path
    format: str  # "srt", "vtt" or "ass"
    language: str | None  # the language tag as written in the name, None when untagged
    forced: bool = False
    hearing_impaired: bool = False
    default: bool = False


def parse_sidecar_name(video: str | os.PathLike, candidate: str | os.PathLike) -> Sidecar | None:
    """What ``candidate``'s file name says as a sidecar of ``video``; None when it is not one (another
    stem, not a subtitle extension, or a tag that is neither a language nor a known flag)."""
    stem = Path(video).stem
    path = Path(candidate)
    name = path.name
    fmt = SUBTITLE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None or not name.startswith(stem + "."):
        return None
    middle = name[len(stem) + 1:len(name) - len(path.suffix)]
    tags = middle.split(".") if middle else []
    language: str | None = None
    flags: set[str] = set()
    for tag in tags:
        low = tag.lower()
        if language is None and not flags and is_language_tag(tag):
            language = tag  # "talk.hi.srt" is Hindi; in "talk.en.hi.srt" "hi" is a flag
        elif low in _FLAGS:
            flags.add(low)
        else:
            return None
    return Sidecar(path, fmt, language, forced="forced" in flags,
                   hearing_impaired=bool(flags & _HEARING_IMPAIRED), default="default" in flags)


def find_sidecars(video: str | os.PathLike) -> list[Sidecar]:
    """The sidecars of ``video`` in its folder, sorted by file name (an unreadable folder: none)."""
    path = Path(video)
    folder = path.parent
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name == path.name:
            continue
        car = parse_sidecar_name(path, entry.name)
        if car is None:
            continue
        try:
            if not entry.is_file():
                continue
        except OSError:
            continue
        found.append(Sidecar(folder / entry.name, car.format, car.language, car.forced,
                             car.hearing_impaired, car.default))
    return found


def sidecar_rank(car: Sidecar, languages: Sequence[str] | None = None) -> tuple:
    """Sort key of a sidecar: lower wins (the order in this module's docstring)."""
    return (
        language_rank(car.language, languages),
        car.forced,
        bool(not languages and car.language is not None),
        not car.default,
        _FORMAT_RANK.get(car.format, len(_FORMAT_RANK)),
        car.path.name,
    )


def choose_sidecar(sidecars: Sequence[Sidecar], languages: Sequence[str] | None = None) -> Sidecar | None:
    """The sidecar to use among ``sidecars`` (None when there is none); see the module docstring."""
    return min(sidecars, key=lambda c: sidecar_rank(c, languages), default=None)


def sidecar_fingerprint(video: str | os.PathLike, sidecars: Sequence[Sidecar] | None = None) -> str | None:
    """A content hash of all the sidecars of ``video`` (names and bytes), or None when it has none.

    Every sidecar counts, not only the one chosen: adding a subtitle file in a preferred language
    changes which one wins. Combined with the video's own signature it makes a video whose subtitles
    were edited, added or removed a changed video. An unreadable sidecar hashes its name and the error,
    so it changes the fingerprint when it becomes readable.
    """
    cars = find_sidecars(video) if sidecars is None else list(sidecars)
    if not cars:
        return None
    h = hashlib.sha256()
    for car in sorted(cars, key=lambda c: c.path.name):
        h.update(car.path.name.encode("utf-8", "surrogateescape") + b"\0")
        try:
            data = car.path.read_bytes()
        except OSError as e:
            data = f"unreadable: {type(e).__name__}".encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return "sha256-" + h.hexdigest()[:16]
