"""Qwen3-VL-Embedding encoder: one vector per segment (or per frame group) from Qwen/Qwen3-VL-Embedding-2B
or -8B, one vector per text query, for nearest-neighbour search (MaxSim over one query vector is the
cosine, or the best cosine over a segment's frame-group vectors).

The input format follows the published embedding script (``Qwen3VLEmbedder`` of QwenLM/Qwen3-VL-Embedding,
transformers 4.57): a one-turn chat, the instruction as the system message, the generation prompt added,
the last token's final hidden state (the padded position never) L2-normalised::

    <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n

``content`` is the query text for a query (instruction: :data:`DEFAULT_QUERY_INSTRUCTION`), and for a
segment its video, expanded as the published Qwen3-VL processor does: one ``<t seconds>`` marker and one
``<|vision_start|><|video_pad|>*n<|vision_end|>`` block per frame pair (instruction: "Represent the user's
input."). An instruction that does not end in punctuation gets a full stop, as in the script.

Where this may differ from the script: frames come from our own decoder and sampler (the script's
qwen-vl-utils resizes with its own rounding), timestamps count from the segment start, the per-clip budget
is the script's (7,680 visual tokens, at most 768 per frame pair) but the smallest frame is the video
processor's ``size.shortest_edge`` rather than 128 tokens, and sequences are left padded (the script pads
on the right and pools the last real token: the same vector). ``dim`` below the model width keeps the first
``dim`` components and normalises again (the Matryoshka truncation the model card describes).

Weights load on transformers' native ``Qwen3VLModel`` through an explicit key map
(:mod:`maxsim.encoders.qwen3vl`): a missing or unexpected tensor is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from maxsim.encoders.checkpoint import open_checkpoint
from maxsim.encoders.common import clip_frames, token_budget_batches
from maxsim.encoders.qwen3vl import (
    LastTokenModel,
    VideoFormat,
    VideoInput,
    chat_ids,
    group_count,
    load_last_token_model,
    model_inputs,
    punctuated,
)
from maxsim.types import Clip, FrameSize, TokenGrid

DEFAULT_CHECKPOINT = "Qwen/Qwen3-VL-Embedding-2B"
FAMILY = "Qwen3-VL-Embedding"
DEFAULT_INSTRUCTION = "Represent the user's input."
# MMEB-V2's instruction for text-to-video retrieval, the task family the model is evaluated on.
DEFAULT_QUERY_INSTRUCTION = "Find a video that contains the following visual content."
PER_CHOICES = ("segment", "frames")


@dataclass(frozen=True)
class Qwen3VLEmbeddingSettings:
    """Knobs that change what a clip or query turns into (recorded with the index)."""

    per: str = "segment"  # "segment": one vector per clip; "frames": one per group of frames_per_vector
    frames_per_vector: int = 2  # per="frames": frames behind each vector (a frame pair by default)
    max_visual_tokens: int = 7680  # per clip, spread over its frames (the published script's total)
    max_group_tokens: int = 768  # per frame pair at most (the published script's per-frame cap)
    max_frames: int = 64  # thin a clip's frames uniformly above this many (the script's default)
    instruction: str = DEFAULT_INSTRUCTION  # system message for clips
    query_instruction: str = DEFAULT_QUERY_INSTRUCTION  # system message for queries
    dim: int | None = None  # keep the first dim components (Matryoshka); None: the model width
    absolute_timestamps: bool = False  # timestamp markers from the video start instead of the clip start
    batch_tokens: int = 16384  # padded sequence positions per forward pass (clips)
    text_batch_size: int = 32


class Qwen3VLEmbeddingEncoder:
    """Single-vector (per segment) or few-vector (per frame group) encoder on a Qwen3-VL-Embedding
    checkpoint; see the module docstring for the formats."""

    def __init__(self, model: LastTokenModel, tokenizer: Any, video_processor: Any, name: str,
                 settings: Qwen3VLEmbeddingSettings | None = None, revision: str | None = None):
        s = settings or Qwen3VLEmbeddingSettings()
        width = int(model.config.text_config.hidden_size)
        if s.per not in PER_CHOICES:
            raise ValueError(f"per must be one of {PER_CHOICES}, got {s.per!r}")
        if s.frames_per_vector < 1:
            raise ValueError(f"frames_per_vector must be >= 1, got {s.frames_per_vector}")
        for key in ("max_visual_tokens", "max_group_tokens", "max_frames", "batch_tokens", "text_batch_size"):
            if getattr(s, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(s, key)}")
        if s.dim is not None and not 1 <= s.dim <= width:
            raise ValueError(f"dim must be from 1 to the model width {width}, got {s.dim}")
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = "<|endoftext|>"
        cfg = model.config
        self.video = VideoFormat(
            video_processor, self._ids, int(cfg.video_token_id), int(cfg.vision_start_token_id),
            int(cfg.vision_end_token_id),
        )
        self.video.check(cfg.vision_config)
        self.name = name
        self.revision = revision
        self._settings = s
        self.dim = int(s.dim or width)
        first = next(model.parameters()).device
        self._preprocess_device = str(first) if first.type == "cuda" else None

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        revision: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[Any, Any] | None = None,
        attn_implementation: str | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        **settings: Any,
    ) -> Qwen3VLEmbeddingEncoder:
        """Load a Qwen3-VL-Embedding checkpoint (a hub id or a local folder in the published layout:
        config.json with model_type ``qwen3_vl``, safetensors, tokenizer and video processor files).

        ``device`` defaults to CUDA when available, ``dtype`` to bfloat16 on a GPU and float32 on the CPU;
        ``device_map`` spreads the model over GPUs. ``settings`` are fields of
        :class:`Qwen3VLEmbeddingSettings` (``per="frames"``, ``max_visual_tokens``, ``dim``, ...)."""
        from transformers import Qwen2Tokenizer, Qwen3VLVideoProcessor

        unknown = sorted(set(settings) - set(Qwen3VLEmbeddingSettings.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown Qwen3-VL-Embedding setting(s) {unknown}; known: "
                            f"{sorted(Qwen3VLEmbeddingSettings.__dataclass_fields__)}")
        ckpt = open_checkpoint(
            "qwen3-vl-embedding", id_or_path, device, dtype, revision=revision,
            local_files_only=local_files_only, cache_dir=cache_dir, token=token,
        )
        model = load_last_token_model(ckpt.folder, FAMILY, ckpt.device, ckpt.dtype, device_map,
                                      attn_implementation, max_memory)
        tokenizer = Qwen2Tokenizer.from_pretrained(str(ckpt.folder))
        video_processor = Qwen3VLVideoProcessor.from_pretrained(str(ckpt.folder))
        return cls(model, tokenizer, video_processor, ckpt.name, Qwen3VLEmbeddingSettings(**settings),
                   revision=ckpt.revision)

    # -- settings -----------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """Encoding settings (recorded in the index next to ``name`` and ``dim``)."""
        d = asdict(self._settings)
        d["dtype"] = str(next(self.model.parameters()).dtype).replace("torch.", "")
        d["pooling"] = "last token, L2-normalised"
        return d

    def with_settings(self, **changes: Any) -> Qwen3VLEmbeddingEncoder:
        """A second encoder on the same loaded model with some settings changed (weights shared)."""
        return type(self)(self.model, self.tokenizer, self.video.processor, self.name,
                          replace(self._settings, **changes), self.revision)

    def _pair_tokens(self, n_frames: int) -> int:
        """Visual tokens per frame pair for a clip of ``n_frames`` frames."""
        s = self._settings
        pairs = group_count(min(n_frames, s.max_frames), self.video.temporal)
        return max(1, min(s.max_group_tokens, s.max_visual_tokens // pairs))

    def frame_size(self, n_frames: int) -> FrameSize:
        """The largest frames worth keeping for a clip of ``n_frames`` frames (the clip's budget spread
        over its frame pairs, at most :attr:`max_group_tokens` each)."""
        return FrameSize(max_pixels=self._pair_tokens(n_frames) * self.video.tile ** 2)

    # -- text ---------------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.model.input_device

    def _pool(self, last: torch.Tensor) -> torch.Tensor:
        out = last[:, : self.dim].float().cpu()
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def query_ids(self, text: str) -> list[int]:
        """The token ids of one query in the published format."""
        body = text.strip() or "NULL"  # the script's stand-in for empty content
        return chat_ids(self._ids, punctuated(self._settings.query_instruction), body, None)

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One (1, dim) float32 CPU tensor per query, L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings; wrap a single query in a list")
        seqs = [self.query_ids(t) for t in texts]
        out: list[torch.Tensor] = []
        bs = self._settings.text_batch_size
        for i in range(0, len(seqs), bs):
            inputs, _, _ = model_inputs(seqs[i:i + bs], [], self.tokenizer.pad_token_id,
                                        self.video.video_token_id, self.device)
            with torch.inference_mode():
                vecs = self._pool(self.model(**inputs))
            out.extend(v.unsqueeze(0).clone() for v in vecs)
        return out

    # -- clips --------------------------------------------------------------------------------------
    def token_labels(self, text: str) -> list[str]:
        """One vector per query: the query itself."""
        return [text.strip()]

    def token_grid(self, clip: Clip, n_tokens: int) -> TokenGrid | None:
        """``per="frames"``: one vector per group of ``frames_per_vector`` frames (no position inside it);
        one vector per segment: None (no frame carries the match on its own)."""
        s = self._settings
        return TokenGrid(s.frames_per_vector, 1, 1) if s.per == "frames" else None

    def _parts(self, clip: Clip) -> list[Clip]:
        """The clips whose vectors make up this clip's: itself, or one per group of frames."""
        s = self._settings
        if s.per == "segment":
            return [clip]
        frames, times = clip_frames(clip, s.max_frames)
        step = s.frames_per_vector
        parts = []
        for i in range(0, len(frames), step):
            t = times[i:i + step]
            parts.append(Clip(clip.video, float(t[0]), float(t[-1]), frames[i:i + step], t))
        return parts

    def _prepare(self, clip: Clip, budget_frames: int) -> tuple[list[int], VideoInput]:
        s = self._settings
        n = min(len(clip.timestamps), s.max_frames)
        tokens = self._pair_tokens(budget_frames) * group_count(n, self.video.temporal)
        video = self.video.prepare(clip, s.max_frames, tokens, s.absolute_timestamps, self._preprocess_device)
        return chat_ids(self._ids, punctuated(s.instruction), "", video.ids), video

    def encode_clips_timed(self, clips: Sequence[Clip]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Like :meth:`encode_clips`, with each vector's time (seconds in the video: the mean time of the
        frames behind it)."""
        from tqdm.auto import tqdm

        items: list[tuple[int, list[int], VideoInput]] = []
        for ci, clip in enumerate(clips):
            n_frames = len(clip_frames(clip, self._settings.max_frames)[1])
            for part in self._parts(clip):
                ids, video = self._prepare(part, n_frames)
                items.append((ci, ids, video))
        batches = token_budget_batches([len(ids) for _, ids, _ in items], self._settings.batch_tokens)
        vecs: list[torch.Tensor | None] = [None] * len(items)
        quiet = True if len(batches) < 2 else None  # None: show on a terminal only
        for batch in tqdm(batches, desc="encoding clips", unit="batch", disable=quiet):
            inputs, _, _ = model_inputs([items[i][1] for i in batch], [items[i][2] for i in batch],
                                        self.tokenizer.pad_token_id, self.video.video_token_id, self.device)
            with torch.inference_mode():
                pooled = self._pool(self.model(**inputs))
            for row, i in enumerate(batch):
                vecs[i] = pooled[row]
        out: list[tuple[torch.Tensor, np.ndarray]] = []
        for ci in range(len(clips)):
            mine = [i for i, (c, _, _) in enumerate(items) if c == ci]
            times = np.array([float(items[i][2].group_times.mean()) for i in mine])
            out.append((torch.stack([vecs[i] for i in mine]), times))
        return out

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        """One (1, dim) float32 CPU tensor per clip (``per="frames"``: one row per frame group, in frame
        order), L2-normalised."""
        return [v for v, _ in self.encode_clips_timed(clips)]

    def __repr__(self) -> str:
        return (f"Qwen3VLEmbeddingEncoder(name={self.name!r}, dim={self.dim}, per={self._settings.per!r}, "
                f"device={self.device})")


def load(id_or_path: str | None = None, **kwargs: Any) -> Qwen3VLEmbeddingEncoder:
    """Registry factory: ``load_encoder("qwen3-vl-embedding", id_or_path=..., per="frames", ...)``."""
    return Qwen3VLEmbeddingEncoder.from_pretrained(id_or_path or DEFAULT_CHECKPOINT, **kwargs)


def load_frames(id_or_path: str | None = None, **kwargs: Any) -> Qwen3VLEmbeddingEncoder:
    """Registry factory of ``qwen3-vl-embedding-frames``: one vector per frame pair."""
    return load(id_or_path, **{"per": "frames", **kwargs})
