"""A video's transcript from the best source it has: a sidecar subtitle file, a subtitle stream inside
the file, or (only when a speech recognizer is given) its speech.

Subtitle candidates, sidecars and text streams together, are ranked by language first (the caller's
preference; see :func:`~maxsim.transcripts.languages.language_rank`), forced subtitles last, then a
sidecar before a stream (a file put next to the video is a deliberate choice), then each kind's own
order (:func:`~maxsim.transcripts.sidecars.sidecar_rank`, :func:`~maxsim.transcripts.embedded.track_rank`).
A candidate that cannot be read is reported with a :class:`~maxsim.transcripts.cues.SubtitleWarning`
and the next one is tried (``strict=True`` raises instead). Speech is recognised only when no subtitle
candidate gave cues.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from maxsim.transcripts.cues import Cue, SubtitleFormatError, SubtitleWarning, read_subtitles
from maxsim.transcripts.embedded import SubtitleTrack, list_subtitle_tracks, read_track, track_rank
from maxsim.transcripts.languages import language_rank
from maxsim.transcripts.media import MediaError, open_media
from maxsim.transcripts.registry import SpeechRecognizer
from maxsim.transcripts.sidecars import Sidecar, find_sidecars, sidecar_rank

SOURCES = ("sidecar", "embedded", "speech")


@dataclass(frozen=True)
class Transcript:
    """The timed lines of a video and where they came from."""

    cues: tuple[Cue, ...]
    source: str  # "sidecar", "embedded" or "speech"
    origin: str  # the sidecar's path, "stream N (codec)", or the speech recognizer's name
    language: str | None = None  # as tagged by the source, None when unknown

    def __len__(self) -> int:
        return len(self.cues)


def _candidates(video: str | os.PathLike, languages: Sequence[str] | None, sidecars: bool,
                embedded: bool) -> list[Sidecar | SubtitleTrack]:
    found: list[tuple[tuple, Sidecar | SubtitleTrack]] = []
    if sidecars:
        for car in find_sidecars(video):
            key = (language_rank(car.language, languages), car.forced, 0, sidecar_rank(car, languages))
            found.append((key, car))
    if embedded:
        for track in list_subtitle_tracks(video):
            if track.text:
                found.append(((language_rank(track.language, languages), track.forced, 1,
                               track_rank(track, languages)), track))
    found.sort(key=lambda kv: kv[0])
    return [c for _, c in found]


def load_transcript(
    video: str | os.PathLike,
    languages: Sequence[str] | None = None,
    *,
    sidecars: bool = True,
    embedded: bool = True,
    speech: SpeechRecognizer | None = None,
    strict: bool = False,
) -> Transcript | None:
    """The transcript of ``video`` (see the module docstring), or None when it has none: no subtitles
    and no speech recognizer (or no audio stream). ``languages`` orders the subtitle languages wanted
    (``("en", "de")``). Reading streams and audio needs PyAV (the ``transcripts`` extra)."""
    errors: list[str] = []
    found: Transcript | None = None
    for cand in _candidates(video, languages, sidecars, embedded):
        try:
            if isinstance(cand, Sidecar):
                cues = read_subtitles(cand.path, cand.format)
                found = Transcript(tuple(cues), "sidecar", str(cand.path), cand.language)
            else:
                cues = read_track(video, cand)
                origin = f"stream {cand.index} ({cand.codec})"
                found = Transcript(tuple(cues), "embedded", origin, cand.language)
        except (SubtitleFormatError, MediaError) as e:
            if strict:
                raise
            errors.append(str(e))
            continue
        if found.cues:
            break
        found = None
    if errors:
        warnings.warn(f"{video}: subtitles skipped: {'; '.join(errors)}", SubtitleWarning, stacklevel=2)
    if found is not None or speech is None:
        return found
    with open_media(video) as container:
        if not container.streams.audio:
            return None
    cues = speech.transcribe_file(video)
    return Transcript(tuple(cues), "speech", speech.name, getattr(speech, "language", None))
