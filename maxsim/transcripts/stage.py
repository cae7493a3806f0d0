"""The transcript stage of an ingest: a video's transcript (sidecar, embedded stream, or speech when a
recognizer is configured; see :func:`~maxsim.transcripts.source.load_transcript`) encoded by a text
encoder into the vectors the index stores with each cue.

:class:`TranscriptOptions` says where transcripts come from; :class:`TranscriptStage` composes them with a
text encoder. The stage knows nothing of the index: the ingest writes what :meth:`TranscriptStage.gather`
returns next to the video's segments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from maxsim.transcripts.cues import Cue
from maxsim.transcripts.registry import (
    SpeechRecognizer,
    TranscriptEncoder,
    encoder_record,
    load_speech_recognizer,
)
from maxsim.transcripts.sidecars import sidecar_fingerprint
from maxsim.transcripts.source import load_transcript

ENCODE_BATCH = 64  # cue lines per text-encoder call


@dataclass(frozen=True)
class TranscriptOptions:
    """Where an ingest takes transcripts from: ``sidecars`` (``talk.srt``, ``talk.en.vtt`` next to the
    video), ``embedded`` subtitle streams, in the order of ``languages`` (None: untagged first), and,
    only when ``speech`` names a speech recognizer (e.g. ``"whisper"``, a Whisper id or folder, or an
    object), the video's speech when it has no subtitles. Speech recognition is never the default."""

    languages: tuple[str, ...] | None = None
    sidecars: bool = True
    embedded: bool = True
    speech: Any = None

    def __post_init__(self) -> None:
        if self.languages is not None:
            langs = [self.languages] if isinstance(self.languages, str) else list(self.languages)
            object.__setattr__(self, "languages", tuple(str(x) for x in langs))

    @classmethod
    def of(cls, value: TranscriptOptions | Mapping[str, Any] | None) -> TranscriptOptions:
        """Options from an instance, a dict of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, TranscriptOptions):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"languages", "sidecars", "embedded", "speech"})
            if unknown:
                raise ValueError(f"unknown transcript option(s) {unknown}; expected languages, sidecars, "
                                 "embedded, speech")
            return cls(**value)
        raise TypeError(f"transcripts must be True, False, None, a dict or TranscriptOptions, got "
                        f"{type(value).__name__}")


@dataclass
class EncodedTranscript:
    """A video's cues, one vector matrix per cue, and where they came from."""

    cues: tuple[Cue, ...]
    vectors: list[torch.Tensor]
    source: str
    origin: str
    language: str | None = None
    warnings: list[str] = field(default_factory=list)


class TranscriptStage:
    """Gathers and encodes the transcript of each video an ingest encodes (see the module docstring)."""

    def __init__(self, encoder: TranscriptEncoder, options: TranscriptOptions | None = None) -> None:
        self.encoder = encoder
        self.options = options or TranscriptOptions()
        speech = self.options.speech
        self.speech: SpeechRecognizer | None = (None if speech is None
                                                else load_speech_recognizer(speech))

    def record(self) -> dict[str, Any]:
        """What the index records of the channel: the text encoder's record, its dim, the speech
        recognizer's record (None without one)."""
        return {"encoder": encoder_record(self.encoder), "dim": int(self.encoder.dim),
                "speech": None if self.speech is None else encoder_record(self.speech)}

    def settings_key(self) -> str:
        """What a video's transcript vectors depend on besides the video and its sidecars: part of its
        settings key, so that changing them re-encodes the video at the next ingest."""
        o = self.options
        return json.dumps({"encoder": self.encoder.name, "per": getattr(self.encoder, "per", None),
                           "languages": o.languages, "sidecars": o.sidecars, "embedded": o.embedded,
                           "speech": None if self.speech is None else self.speech.name}, sort_keys=True)

    def fingerprint(self, video: str | os.PathLike) -> str | None:
        """The fingerprint of ``video``'s sidecar subtitle files (None without any, or when sidecars are
        not read): a changed, added or removed sidecar makes the video changed."""
        return sidecar_fingerprint(video) if self.options.sidecars else None

    def gather(self, video: str | os.PathLike) -> EncodedTranscript | None:
        """The transcript of ``video`` with its vectors; None when it has none (no subtitles and no
        speech recognizer or no audio). Subtitles that cannot be read are skipped with a warning (the
        next candidate is tried); an encoder that returns bad vectors raises ValueError."""
        o = self.options
        tr = load_transcript(video, o.languages, sidecars=o.sidecars, embedded=o.embedded,
                             speech=self.speech)
        if tr is None or not tr.cues:
            return None
        cues = tuple(c for c in tr.cues if c.text.strip())
        vectors: list[torch.Tensor] = []
        for i in range(0, len(cues), ENCODE_BATCH):
            batch = [c.text for c in cues[i:i + ENCODE_BATCH]]
            out = self.encoder.encode_cues(batch)
            if len(out) != len(batch):
                raise ValueError(f"transcript encoder {self.encoder.name!r} returned {len(out)} outputs "
                                 f"for {len(batch)} lines")
            vectors += [check_cue_vectors(v, self.encoder, text) for v, text in zip(out, batch, strict=True)]
        if not cues:
            return None
        return EncodedTranscript(cues, vectors, tr.source, tr.origin, tr.language)


def check_cue_vectors(v: Any, encoder: TranscriptEncoder, text: str) -> torch.Tensor:
    """One line's vectors as float32 on the CPU, or ValueError naming the line when they are not
    ``(n >= 1, dim)`` finite values."""
    dim = int(encoder.dim)
    if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] == 0 or v.shape[1] != dim:
        shape = tuple(v.shape) if hasattr(v, "shape") else type(v).__name__
        raise ValueError(f"transcript encoder {encoder.name!r} returned {shape} for the line {text[:60]!r}; "
                         f"expected (n >= 1, {dim})")
    v = v.detach().float().cpu()
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"transcript encoder {encoder.name!r} returned NaN or inf for {text[:60]!r}")
    return v
