"""ColQwen3 encoder: a Qwen3-VL model plus a linear projection head, emitting one L2-normalised vector per
visual token of a clip and per token of a query.

Loads checkpoints in the layout of the published remote-code model (``TomoroAI/tomoro-colqwen3-embed-4b``
and its 8B sibling, or fine-tunes saved the same way) on transformers' native Qwen3-VL classes, through an
explicit key map: every weight of the model must come from the checkpoint and every checkpoint tensor must
be used (the unused ``vlm.lm_head.weight`` excepted), otherwise loading fails.

Clip prompt (as the published processor builds it for a video), with one ``<t seconds>`` marker and one
``<|vision_start|>...<|vision_end|>`` block per pair of frames::

    <|im_start|>user\\n
    <0.3 seconds><|vision_start|><|video_pad|> * n<|vision_end|>   (one such block per frame pair)
    Describe the video.<|im_end|><|endoftext|>

Only the ``<|video_pad|>`` rows (the visual tokens) of a clip are returned, in frame order; the prompt
text, the timestamp markers and the special tokens are left out: they are the same in every clip (the
timestamps are relative to the clip start), so they would only add near-identical rows that match any
query. Queries keep every token: the text plus ten ``<|endoftext|>`` augmentation tokens, left padded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maxsim.encoders.checkpoint import open_checkpoint
from maxsim.encoders.colqwen3_model import (  # noqa: F401  (re-exported: the model family's names)
    IGNORED_KEYS,
    KEY_MAP,
    MODEL_TYPES,
    CheckpointKeyError,
    ColQwen3Model,
    backbone_config,
    load_colqwen3_model,
    map_checkpoint_keys,
)
from maxsim.encoders.common import GridMemo, clip_frames, pad_batch, token_budget_batches
from maxsim.encoders.qwen3vl import group_count
from maxsim.types import Clip, FrameSize, TokenGrid

DEFAULT_MAX_VISUAL_TOKENS = 5120  # the model card's recommended ceiling per video
QUERY_AUGMENTATION = 10  # <|endoftext|> tokens appended to every query
# The published processor's defaults; a checkpoint's processor_config.json may override them.
PROMPT_DEFAULTS: dict[str, str] = {
    "video_prompt_prefix": "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe the video.",
    "video_prompt_suffix": "<|im_end|><|endoftext|>",
    "query_prefix": "",
}
VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


def prompt_settings(folder: Path) -> dict[str, str]:
    """Prompt pieces of a checkpoint: :data:`PROMPT_DEFAULTS` updated from its processor_config.json."""
    out = dict(PROMPT_DEFAULTS)
    path = folder / "processor_config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        out.update({k: data[k] for k in PROMPT_DEFAULTS if isinstance(data.get(k), str)})
    return out


@dataclass(frozen=True)
class ColQwen3Settings:
    """Knobs that change what a clip or query turns into (recorded with the index)."""

    max_visual_tokens: int = DEFAULT_MAX_VISUAL_TOKENS  # per clip, spread over its frames
    max_frames: int | None = None  # subsample a clip's frames uniformly above this many
    batch_tokens: int = 16384  # padded sequence positions per forward pass (clips)
    text_batch_size: int = 64
    absolute_timestamps: bool = False  # timestamp markers from the video start instead of the clip start


class ColQwen3Encoder:
    """Multi-vector encoder on a ColQwen3 checkpoint (see the module docstring for the formats)."""

    def __init__(
        self,
        model: ColQwen3Model,
        tokenizer: Any,
        video_processor: Any,
        name: str,
        settings: ColQwen3Settings | None = None,
        prompts: dict[str, str] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.video_processor = video_processor
        self.name = name
        self._settings = settings or ColQwen3Settings()
        self.dim = int(model.embedding_proj_layer.out_features)
        cfg = model.config
        self.video_token_id = int(cfg.video_token_id)
        self.vision_start_id = int(cfg.vision_start_token_id)
        self.vision_end_id = int(cfg.vision_end_token_id)
        vp = video_processor
        self.patch = int(vp.patch_size)
        self.merge = int(vp.merge_size)
        self.temporal = int(vp.temporal_patch_size)
        self._grids = GridMemo()
        vcfg = cfg.vision_config
        if (self.patch, self.merge, self.temporal) != (
            vcfg.patch_size, vcfg.spatial_merge_size, vcfg.temporal_patch_size,
        ):
            raise ValueError(
                f"video processor (patch {self.patch}, merge {self.merge}, temporal {self.temporal}) "
                f"does not match the vision config ({vcfg.patch_size}, {vcfg.spatial_merge_size}, "
                f"{vcfg.temporal_patch_size})"
            )
        # Resize and normalise frames on the GPU when the model is there (the CPU would be the bottleneck).
        first = next(model.parameters()).device
        self._preprocess_device = str(first) if first.type == "cuda" else None
        # The published processor appends the tokenizer's pad token (<|endoftext|> for Qwen) ten times.
        aug = getattr(tokenizer, "pad_token", None) or "<|endoftext|>"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = aug
        self.query_suffix = aug * QUERY_AUGMENTATION
        self.prompts = {**PROMPT_DEFAULTS, **(prompts or {})}
        self.query_prefix = self.prompts["query_prefix"]
        template = self.prompts["video_prompt_prefix"] + self.prompts["video_prompt_suffix"]
        marker = VIDEO_PLACEHOLDER if VIDEO_PLACEHOLDER in template else "<|video_pad|>"
        if marker not in template:
            raise ValueError(f"video prompt {template!r} has no {VIDEO_PLACEHOLDER} placeholder")
        before, _, after = template.partition(marker)
        self._prompt_ids = [self._ids(before), self._ids(after)]
        self._set_budget()

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
        max_visual_tokens: int = DEFAULT_MAX_VISUAL_TOKENS,
        max_frames: int | None = None,
        batch_tokens: int = 16384,
        text_batch_size: int = 64,
        absolute_timestamps: bool = False,
    ) -> ColQwen3Encoder:
        """Load a ColQwen3 checkpoint from a local folder or a Hugging Face id.

        ``device`` defaults to CUDA when available, ``dtype`` to bfloat16 on a GPU and float32 on the CPU.
        ``device_map`` ("auto", "balanced", "sequential" or an explicit dict) spreads the model over several
        GPUs through accelerate. ``max_visual_tokens`` caps the visual tokens of one clip (the frames are
        resized to fit); ``batch_tokens`` caps the padded sequence positions of one forward pass.
        """
        from transformers import Qwen2Tokenizer, Qwen3VLVideoProcessor

        ckpt = open_checkpoint(
            "colqwen3", id_or_path, device, dtype, revision=revision, local_files_only=local_files_only,
            cache_dir=cache_dir, token=token,
        )
        folder = ckpt.folder
        model = load_colqwen3_model(
            folder, ckpt.device, ckpt.dtype, device_map, attn_implementation, max_memory
        )
        # Native classes only: the checkpoint's processor files name the remote-code ColQwen3Processor.
        tokenizer = Qwen2Tokenizer.from_pretrained(str(folder))
        video_processor = Qwen3VLVideoProcessor.from_pretrained(str(folder))
        settings = ColQwen3Settings(
            max_visual_tokens=max_visual_tokens,
            max_frames=max_frames,
            batch_tokens=batch_tokens,
            text_batch_size=text_batch_size,
            absolute_timestamps=absolute_timestamps,
        )
        return cls(
            model, tokenizer, video_processor, name=ckpt.name, settings=settings,
            prompts=prompt_settings(folder),
        )

    # -- settings -----------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """Encoding settings (recorded in the index next to ``name`` and ``dim``)."""
        d = asdict(self._settings)
        d["dtype"] = str(next(self.model.parameters()).dtype).replace("torch.", "")
        d["query_augmentation"] = QUERY_AUGMENTATION
        d["visual_rows"] = "video_pad tokens only"
        return d

    def with_settings(self, **changes: Any) -> ColQwen3Encoder:
        """A second encoder on the same loaded model with some settings changed (e.g. a smaller
        ``max_visual_tokens``); ``name`` stays the same, the weights are shared."""
        return ColQwen3Encoder(
            self.model, self.tokenizer, self.video_processor, self.name, replace(self._settings, **changes),
            self.prompts,
        )

    def _set_budget(self) -> None:
        s = self._settings
        if s.max_visual_tokens < 1:
            raise ValueError(f"max_visual_tokens must be >= 1, got {s.max_visual_tokens}")
        if s.max_frames is not None and s.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {s.max_frames}")
        tile = self.patch * self.merge
        self.max_pixels = s.max_visual_tokens * tile * tile * self.temporal
        min_pixels = self.video_processor.size.shortest_edge or tile * tile * self.temporal
        self.min_pixels = min(min_pixels, self.max_pixels)
        # Every pair of frames costs at least one token: never take more frames than the budget allows.
        cap = 2 * s.max_visual_tokens if s.max_frames is None else min(s.max_frames, 2 * s.max_visual_tokens)
        self.frame_cap = max(cap, 1)

    # -- text ---------------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.model.embedding_proj_layer.weight.device

    def _input_device(self) -> torch.device:
        return self.model.vlm.language_model.embed_tokens.weight.device

    def token_labels(self, text: str) -> list[str]:
        """Each query token as text (the query prompt's and augmentation tokens included), in the order of
        :meth:`encode_texts`'s vectors."""
        ids = self.tokenizer(self.query_prefix + text.strip() + self.query_suffix)["input_ids"]
        return [self.tokenizer.decode([i]).strip() or "\u2423" for i in ids]  # U+2423: a blank

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One (n_tokens, dim) float32 CPU tensor per query: its tokens plus the augmentation tokens."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings; wrap a single query in a list")
        out: list[torch.Tensor] = []
        bs = self._settings.text_batch_size
        prompts = [self.query_prefix + t.strip() + self.query_suffix for t in texts]
        self.tokenizer.padding_side = "left"
        for i in range(0, len(prompts), bs):
            enc = self.tokenizer(prompts[i:i + bs], padding="longest", return_tensors="pt")
            dev = self._input_device()
            ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
            with torch.inference_mode():
                emb = self.model(input_ids=ids, attention_mask=mask)
            emb, mask = emb.cpu(), mask.cpu().bool()
            out.extend(emb[j][mask[j]].clone() for j in range(emb.shape[0]))
        return out

    # -- clips --------------------------------------------------------------------------------------
    def prepare(self, clip: Clip) -> dict[str, Any]:
        """Video-processor features, prompt ids and per-token times of one clip (public so that the encoder
        benchmark can time pre-processing apart from the model)."""
        from transformers.video_utils import VideoMetadata

        frames, times = clip_frames(clip, self.frame_cap)
        # Frames go in pairs (temporal patch): repeat the last frame to complete the last pair; a
        # one-frame clip becomes a still pair.
        if pad := -len(frames) % self.temporal:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
            times = np.concatenate([times, np.repeat(times[-1:], pad)])
        n = len(frames)
        rel = times if self._settings.absolute_timestamps else times - clip.start
        span = float(rel[-1] - rel[0])
        fps = (n - 1) / span if n > 1 and span > 0 else 1.0
        metadata = VideoMetadata(
            total_num_frames=n,
            fps=fps,
            frames_indices=np.round((rel - rel[0]) * fps).astype(int),
            duration=span,
        )
        feats = self.video_processor(
            videos=[frames],
            video_metadata=[metadata],
            do_sample_frames=False,
            cap_pixels_per_frame=False,  # the budget is per clip, spread over its frames
            device=self._preprocess_device,
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            return_tensors="pt",
        )
        grid = feats["video_grid_thw"][0]
        t_groups, gh, gw = (int(x) for x in grid)
        per_group = gh * gw // (self.merge * self.merge)
        group_times = times.reshape(t_groups, self.temporal).mean(axis=1)
        group_marks = rel.reshape(t_groups, self.temporal).mean(axis=1)
        ids: list[int] = list(self._prompt_ids[0])
        for mark in group_marks:
            ids += self._ids(f"<{mark:.1f} seconds>")
            ids += [self.vision_start_id] + [self.video_token_id] * per_group + [self.vision_end_id]
        ids += self._prompt_ids[1]
        return {
            "ids": ids,
            "metadata": metadata,
            "frames": frames,
            "pixels": feats["pixel_values_videos"],
            "grid": grid,
            "token_times": np.repeat(group_times, per_group),
        }

    def encode_clips_timed(self, clips: Sequence[Clip]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Like :meth:`encode_clips`, with each token's time (seconds in the video: the mean time of the
        frame pair it comes from)."""
        from tqdm.auto import tqdm

        prepared = [self.prepare(c) for c in clips]
        self._grids.reset()
        for c, p in zip(clips, prepared, strict=True):
            self._grids.remember(c, self._grid_of(p["grid"]))
        batches = token_budget_batches([len(p["ids"]) for p in prepared], self._settings.batch_tokens)
        results: list[tuple[torch.Tensor, np.ndarray] | None] = [None] * len(prepared)
        quiet = True if len(batches) < 2 else None  # None: show on a terminal only
        for batch in tqdm(batches, desc="encoding clips", unit="batch", disable=quiet):
            ids, mask = pad_batch([prepared[i]["ids"] for i in batch], self.tokenizer.pad_token_id, left=True)
            dev = self._input_device()
            inputs = {
                "input_ids": ids.to(dev),
                "attention_mask": mask.to(dev),
                "mm_token_type_ids": ((ids == self.video_token_id).long() * 2).to(dev),
                "pixel_values_videos": torch.cat([prepared[i]["pixels"] for i in batch]).to(dev),
                "video_grid_thw": torch.stack([prepared[i]["grid"] for i in batch]).to(dev),
            }
            with torch.inference_mode():
                emb = self.model(**inputs).cpu()
            visual = (ids == self.video_token_id) & mask.bool()
            for row, i in enumerate(batch):
                vecs = emb[row][visual[row]].clone()
                times = prepared[i]["token_times"]
                if len(vecs) != len(times):  # pragma: no cover - prompt and grid are built together
                    raise RuntimeError(f"clip {i}: {len(vecs)} visual rows but {len(times)} token times")
                results[i] = (vecs, times)
        return [r for r in results if r is not None]

    def _grid_of(self, grid: torch.Tensor) -> TokenGrid:
        _, gh, gw = (int(x) for x in grid)
        return TokenGrid(self.temporal, gh // self.merge, gw // self.merge)

    def token_grid(self, clip: Clip, n_tokens: int) -> TokenGrid:
        """Frame pairs of ``video_grid_thw``'s rows x columns merged by the spatial merge size: from the
        latest :meth:`encode_clips` call, else from the video processor again."""
        return self._grids.recall(clip) or self._grid_of(self.prepare(clip)["grid"])

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        """One (n_visual_tokens, dim) float32 CPU tensor per clip, tokens in frame order."""
        return [vecs for vecs, _ in self.encode_clips_timed(clips)]

    def frame_size(self, n_frames: int) -> FrameSize:
        """The largest frames worth keeping for a clip of ``n_frames`` frames: the clip's visual-token
        budget spread over its frame pairs, in pixels per frame (larger frames would be shrunk to it).
        With the defaults, 16 frames of 1080p video then fill the 5,120-token budget."""
        n = min(max(int(n_frames), 1), self.frame_cap)
        per_group = max(1, self._settings.max_visual_tokens // group_count(n, self.temporal))
        tile = self.patch * self.merge
        return FrameSize(max_pixels=per_group * tile * tile)

    def visual_tokens(self, n_frames: int, height: int, width: int) -> int:
        """How many visual tokens a clip of this many frames of this size gets under the current budget."""
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        n = min(max(n_frames, 1), self.frame_cap)
        n += -n % self.temporal
        h, w = smart_resize(
            n, height, width, temporal_factor=self.temporal, factor=self.patch * self.merge,
            min_pixels=self.min_pixels, max_pixels=self.max_pixels,
        )
        return (n // self.temporal) * (h // self.patch) * (w // self.patch) // (self.merge * self.merge)

    def __repr__(self) -> str:
        return f"ColQwen3Encoder(name={self.name!r}, dim={self.dim}, device={self.device})"


DEFAULT_CHECKPOINT = "TomoroAI/tomoro-colqwen3-embed-4b"
# Encoder settings for CPU-only hosts: few, small frames per clip. Pair it with a frame sampler of about
# 1 frame/s and at most 4 frames per segment (``FrameSampler(fps=1, max_frames=4)``).
CPU_PRESET: dict[str, Any] = {"max_visual_tokens": 256, "max_frames": 4, "batch_tokens": 4096}


def load(id_or_path: str | None = None, **kwargs: Any) -> ColQwen3Encoder:
    """Registry factory: ``load_encoder("colqwen3", id_or_path=..., device=..., ...)``."""
    return ColQwen3Encoder.from_pretrained(id_or_path or DEFAULT_CHECKPOINT, **kwargs)


def load_cpu(id_or_path: str | None = None, **kwargs: Any) -> ColQwen3Encoder:
    """Registry factory for ``colqwen3-cpu``: :data:`CPU_PRESET` (explicit keyword arguments win)."""
    return load(id_or_path, **{**CPU_PRESET, **kwargs})
