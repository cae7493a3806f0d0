"""Speech recognition for videos without subtitles: Whisper through transformers (any ``openai/whisper-*``
hub id, a fine-tuned Whisper, or a local folder), turning a file's audio into timed cues.

Audio is decoded with PyAV (:mod:`maxsim.transcripts.audio`) in blocks of ``block_s`` seconds (30 minutes
by default, which bounds memory). Each block is transcribed with transformers' long-form Whisper
generation (sequential 30-second windows that move on to the last predicted timestamp, as OpenAI's
decoder does), with timestamps: every Whisper segment becomes a :class:`~maxsim.transcripts.cues.Cue`.
Cue times are put on the video's time line, clipped to the block (a model may predict a timestamp past
the end of the audio) and sorted; segments with no text are dropped. A word can be cut at a block
boundary. Never used unless asked for: a Whisper model is large and slow next to reading subtitles.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maxsim.encoders.checkpoint import MODEL_LOAD_OPTIONS, open_checkpoint
from maxsim.transcripts.audio import iter_audio
from maxsim.transcripts.cues import Cue, collapse
from maxsim.transcripts.specs import join_options

DEFAULT_WHISPER = "openai/whisper-small"
WHISPER_TASKS = ("transcribe", "translate")
SPEC_OPTIONS = ("language", "task", "num_beams", "block_s")  # the settings a spec carries


@dataclass(frozen=True)
class WhisperSettings:
    """What changes the transcript (recorded with an index)."""

    language: str | None = None  # spoken language ("en", "english"); None: detected per 30 s window
    task: str = "transcribe"  # or "translate" (into English)
    num_beams: int = 1
    block_s: float = 1800.0  # seconds of audio decoded and transcribed at a time

    def __post_init__(self) -> None:
        if self.task not in WHISPER_TASKS:
            raise ValueError(f"task must be one of {WHISPER_TASKS}, got {self.task!r}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if not self.block_s >= 30.0:
            raise ValueError(f"block_s must be at least 30 seconds (one Whisper window), got {self.block_s}")


class WhisperTranscriber:
    """Transcribes audio into timed cues with a Whisper checkpoint (see the module docstring)."""

    spec_base: str | None = None  # set by the registry: the spec (without options) it was loaded from
    explicit: frozenset[str] = frozenset()  # options given explicitly (recorded in the spec)

    def __init__(self, model: Any, processor: Any, name: str, revision: str,
                 settings: WhisperSettings | None = None):
        self.model = model
        self.processor = processor
        self.name = name
        self.revision = revision
        self._settings = settings or WhisperSettings()
        self.sampling_rate = int(processor.feature_extractor.sampling_rate)
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", True))
        if self._settings.language is not None and not self.multilingual:
            raise ValueError(f"{name} is an English-only Whisper: it takes no language "
                             f"({self._settings.language!r} given)")

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | os.PathLike = DEFAULT_WHISPER,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        revision: str | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        language: str | None = None,
        task: str = "transcribe",
        num_beams: int = 1,
        block_s: float = 1800.0,
    ) -> WhisperTranscriber:
        """Load a Whisper checkpoint (hub id or local folder holding the model, its tokenizer and feature
        extractor). Defaults: CUDA when available; bfloat16 there, float32 on the CPU. Any missing or
        mis-shaped weight is an error."""
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        ckpt = open_checkpoint("whisper", id_or_path, device, dtype, revision=revision,
                               local_files_only=local_files_only, cache_dir=cache_dir, token=token)
        model, info = WhisperForConditionalGeneration.from_pretrained(
            str(ckpt.folder), dtype=ckpt.dtype, **MODEL_LOAD_OPTIONS)
        bad = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
        problems = sorted(map(str, bad))
        problems = [p for p in problems if p != "proj_out.weight"]  # tied to the token embeddings
        if problems:
            raise ValueError(f"Whisper checkpoint {ckpt.folder} does not match the model: "
                             f"{', '.join(problems[:8])}")
        model.to(ckpt.device).eval()
        processor = AutoProcessor.from_pretrained(str(ckpt.folder), local_files_only=True)
        settings = WhisperSettings(language=language, task=task, num_beams=num_beams, block_s=block_s)
        return cls(model, processor, ckpt.name, ckpt.revision, settings)

    @property
    def settings(self) -> dict[str, Any]:
        """Transcription settings, recorded with an index next to ``name``."""
        d = asdict(self._settings)
        d["dtype"] = str(self.model.dtype).replace("torch.", "")
        return d

    @property
    def language(self) -> str | None:
        """The spoken language asked for (None: detected)."""
        return self._settings.language

    @property
    def spec(self) -> str | None:
        """The spec that loads this transcriber again with the same settings (``whisper(language=de)``);
        None when it was not loaded from a spec."""
        if self.spec_base is None:
            return None
        values = asdict(self._settings)
        return join_options(self.spec_base, {k: values[k] for k in SPEC_OPTIONS if k in self.explicit})

    def with_settings(self, **changes: Any) -> WhisperTranscriber:
        """A second transcriber on the same loaded model with some settings changed."""
        enc = WhisperTranscriber(self.model, self.processor, self.name, self.revision,
                                 replace(self._settings, **changes))
        enc.spec_base = self.spec_base
        enc.explicit = self.explicit | (set(changes) & set(SPEC_OPTIONS))
        return enc

    def transcribe(self, samples: np.ndarray, sampling_rate: int | None = None, offset: float = 0.0
                   ) -> list[Cue]:
        """Cues of mono float samples (at the model's rate, 16 kHz for Whisper), their times shifted by
        ``offset`` seconds and clipped to the audio's span."""
        rate = self.sampling_rate if sampling_rate is None else int(sampling_rate)
        if rate != self.sampling_rate:
            raise ValueError(f"{self.name} takes audio at {self.sampling_rate} Hz, got {rate} Hz")
        audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        duration = audio.shape[0] / rate
        if audio.shape[0] == 0:
            return []
        fe = self.processor.feature_extractor
        long_form = duration > fe.chunk_length
        kw: dict[str, Any] = (dict(truncation=False, padding="longest", return_attention_mask=True)
                              if long_form else {})
        feats = fe(audio, sampling_rate=rate, return_tensors="pt", **kw)
        dev = next(self.model.parameters()).device
        gen: dict[str, Any] = {"return_timestamps": True, "return_segments": True,
                               "num_beams": self._settings.num_beams}
        if self.multilingual:
            gen["task"] = self._settings.task
            if self._settings.language is not None:
                gen["language"] = self._settings.language
        if "attention_mask" in feats:
            gen["attention_mask"] = feats["attention_mask"].to(dev)
        with torch.inference_mode():
            out = self.model.generate(feats["input_features"].to(dev, self.model.dtype), **gen)
        segments = out["segments"][0] if isinstance(out, dict) else []
        cues = []
        for seg in segments:
            start = min(max(float(seg["start"]), 0.0), duration)
            end = min(max(float(seg["end"]), start), duration)
            text = collapse(self.processor.tokenizer.decode(seg["tokens"], skip_special_tokens=True))
            if text and start < duration:
                cues.append(Cue(offset + start, offset + end, text))
        cues.sort(key=lambda c: (c.start, c.end))
        return cues

    def transcribe_file(self, path: str | os.PathLike, stream: int | None = None,
                        progress: bool = False) -> list[Cue]:
        """Cues of the speech in a media file's audio (its first audio stream, or stream index
        ``stream``), on the video's time line. Raises :class:`~maxsim.transcripts.media.MediaError`
        when the file has no audio."""
        from tqdm.auto import tqdm

        cues: list[Cue] = []
        blocks = iter_audio(path, self.sampling_rate, block_s=self._settings.block_s, stream=stream)
        for block in tqdm(blocks, desc=f"speech {Path(path).name}", unit="block", disable=not progress):
            cues.extend(self.transcribe(block.samples, block.sampling_rate, offset=block.start))
        return cues

