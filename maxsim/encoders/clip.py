"""CLIP / SigLIP / SigLIP 2 frame encoder: one L2-normalised vector per sampled frame, one per text query.

A segment is then a small multi-vector (its frames), and MaxSim of a one-vector query is the cosine with
its best frame, whose time becomes the hit's ``best_time``. A ViT-B frame encoder costs a few tens of
GFLOPs a frame, 10-50x less than a multi-billion-parameter vision-language model: on a CPU it is the
practical choice.

Any checkpoint of the three families loads, by its config's ``model_type``, on transformers' native classes
(``CLIPModel``, ``SiglipModel``, ``Siglip2Model``) with its own image processor and tokenizer; a weight the
checkpoint lacks, has too many of or has in another shape is an error (never a silently random weight).
Default checkpoints: ``google/siglip2-base-patch16-224`` (``siglip``; SigLIP 2's fixed-resolution
checkpoints use the SigLIP architecture with a Gemma tokenizer) and ``openai/clip-vit-base-patch32``
(``clip``).

Texts are tokenized as the families were trained: CLIP padded to the longest text (its pooled token is
the end-of-text one), SigLIP and SigLIP 2 padded to the full text length (64 tokens; their pooled token
is the last position). Texts longer than the text model's positions are truncated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from maxsim.encoders.checkpoint import MODEL_LOAD_OPTIONS, open_checkpoint, resolve_cpu_dtype
from maxsim.encoders.common import clip_frames
from maxsim.types import Clip, FrameSize, TokenGrid

MODEL_TYPES: tuple[str, ...] = ("clip", "siglip", "siglip2")
DEFAULT_SIGLIP = "google/siglip2-base-patch16-224"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
_TEXT_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _model_class(model_type: str):
    import transformers

    return {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel,
            "siglip2": transformers.Siglip2Model}[model_type]


def _field(size: Any, key: str) -> Any:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def processor_frame_size(processor: Any) -> FrameSize | None:
    """The largest frames an image processor can use: its resize target (SigLIP's square, CLIP's
    shortest edge) as a shorter-side cap, or SigLIP 2 NaFlex's patch budget as a pixel cap."""
    max_patches, patch = getattr(processor, "max_num_patches", None), getattr(processor, "patch_size", None)
    if max_patches and patch:
        return FrameSize(max_pixels=int(max_patches) * int(patch) ** 2)
    size = getattr(processor, "size", None)
    if size is None:
        return None
    if _field(size, "shortest_edge"):
        return FrameSize(short_side=int(_field(size, "shortest_edge")))
    sides = [int(v) for v in (_field(size, "height"), _field(size, "width")) if v]
    return FrameSize(short_side=max(sides)) if sides else None


class ClipFrameEncoder:
    """One vector per frame and per query from a CLIP, SigLIP or SigLIP 2 model (module docstring)."""

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any, name: str, model_type: str,
                 batch_frames: int = 64, text_batch_size: int = 64, revision: str | None = None):
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        if batch_frames < 1 or text_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_frames} and {text_batch_size}")
        self.model = model
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name
        self.model_type = model_type
        self.revision = revision
        self.batch_frames = int(batch_frames)
        self.text_batch_size = int(text_batch_size)
        cfg = model.config
        self.text_length = int(cfg.text_config.max_position_embeddings)
        if model_type == "clip":
            self.dim = int(cfg.projection_dim)
        else:  # SigLIP: the text head's width, which is the vision tower's
            self.dim = int(getattr(cfg.text_config, "projection_size", None) or cfg.text_config.hidden_size)

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        revision: str | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        batch_frames: int = 64,
        text_batch_size: int = 64,
        attn_implementation: str | None = None,
    ) -> ClipFrameEncoder:
        """Load a CLIP, SigLIP or SigLIP 2 checkpoint (hub id or local folder with config.json,
        safetensors, tokenizer and preprocessor files). ``dtype`` defaults to bfloat16 on a GPU and on a
        CPU that computes bf16 natively, float32 elsewhere."""
        from transformers import AutoImageProcessor, AutoTokenizer

        ckpt = open_checkpoint("frames", id_or_path, device, dtype, revision=revision,
                               local_files_only=local_files_only, cache_dir=cache_dir, token=token)
        cfg = json.loads((ckpt.folder / "config.json").read_text())
        mt = cfg.get("model_type")
        if mt not in MODEL_TYPES:
            raise ValueError(
                f"{ckpt.folder / 'config.json'} has model_type {mt!r}; the CLIP/SigLIP frame encoder "
                f"loads {', '.join(MODEL_TYPES)} checkpoints"
            )
        torch_dtype = resolve_cpu_dtype(dtype, ckpt.device)
        model, info = _model_class(mt).from_pretrained(
            str(ckpt.folder), dtype=torch_dtype, **MODEL_LOAD_OPTIONS,
            attn_implementation=attn_implementation or "sdpa",
        )
        kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
        problems = {k: sorted(map(str, info.get(k) or [])) for k in kinds}
        problems = {k: v for k, v in problems.items() if v}
        if problems:
            detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v[:8])}"
                               + (f" ... ({len(v)} in all)" if len(v) > 8 else "")
                               for k, v in problems.items())
            raise ValueError(f"checkpoint {ckpt.folder} does not match the {mt} architecture of its "
                             f"config: {detail}")
        model = model.to(ckpt.device).eval()
        image_processor = AutoImageProcessor.from_pretrained(str(ckpt.folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.folder), local_files_only=True)
        label = ckpt.name.partition(":")[2]  # "<id or folder name>@<revision>"
        # named by the registered entry that loads the family (SigLIP and SigLIP 2: "siglip"), so that an
        # index's recorded name and a spec are compared by family before any weight loads
        family = "clip" if mt == "clip" else "siglip"
        return cls(model, image_processor, tokenizer, f"{family}:{label}", mt, batch_frames, text_batch_size,
                   revision=ckpt.revision)

    # -- settings -----------------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """Encoding settings (recorded in the index next to ``name`` and ``dim``)."""
        size = processor_frame_size(self.image_processor)
        return {
            "family": self.model_type,
            "vectors": "one per frame",
            "text_length": self.text_length,
            "text_padding": "longest" if self.model_type == "clip" else "max_length",
            "image_size": size.describe() if size else None,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
        }

    def frame_size(self, n_frames: int) -> FrameSize | None:
        """The largest frames worth keeping: what the image processor resizes them to (any clip length)."""
        return processor_frame_size(self.image_processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @staticmethod
    def _unit(x: Any) -> torch.Tensor:
        feats = x.pooler_output if hasattr(x, "pooler_output") else x
        out = feats.float().cpu()
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # -- texts --------------------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One (1, dim) float32 CPU tensor per query, L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings; wrap a single query in a list")
        padding = "longest" if self.model_type == "clip" else "max_length"
        out: list[torch.Tensor] = []
        for i in range(0, len(texts), self.text_batch_size):
            batch = [t.strip() for t in texts[i:i + self.text_batch_size]]
            enc = self.tokenizer(batch, padding=padding, truncation=True, max_length=self.text_length,
                                 return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in enc.items() if k in _TEXT_INPUTS}
            with torch.inference_mode():
                vecs = self._unit(self.model.get_text_features(**inputs))
            out.extend(v.unsqueeze(0).clone() for v in vecs)
        return out

    # -- clips --------------------------------------------------------------------------------------
    def encode_frames(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """(n, dim) float32 CPU rows, L2-normalised, for RGB uint8 frames (H, W, 3) of any size."""
        rows = []
        for i in range(0, len(frames), self.batch_frames):
            feats = self.image_processor(images=list(frames[i:i + self.batch_frames]), return_tensors="pt")
            inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                      for k, v in feats.items()}
            with torch.inference_mode():
                rows.append(self._unit(self.model.get_image_features(**inputs)))
        return torch.cat(rows) if rows else torch.zeros(0, self.dim)

    def encode_clips_timed(self, clips: Sequence[Clip]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Like :meth:`encode_clips`, with each row's frame time."""
        checked = [clip_frames(c, len(np.asarray(c.timestamps).reshape(-1)) or 1) for c in clips]
        flat = [f for frames, _ in checked for f in frames]
        vecs = self.encode_frames(flat)
        out, at = [], 0
        for frames, times in checked:
            out.append((vecs[at:at + len(frames)].clone(), times))
            at += len(frames)
        return out

    def token_labels(self, text: str) -> list[str]:
        """One vector per query: the query itself."""
        return [text.strip()]

    def token_grid(self, clip: Clip, n_tokens: int) -> TokenGrid:
        """One vector per frame: the frame is known, no position inside it."""
        return TokenGrid(1, 1, 1)

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        """One (n_frames, dim) float32 CPU tensor per clip, one L2-normalised row per frame, in order."""
        return [v for v, _ in self.encode_clips_timed(clips)]

    def __repr__(self) -> str:
        return (f"ClipFrameEncoder(name={self.name!r}, dim={self.dim}, device={self.device}, "
                f"dtype={self.dtype})")


def load_siglip(id_or_path: str | None = None, **kwargs: Any) -> ClipFrameEncoder:
    """Registry factory of ``siglip``: default google/siglip2-base-patch16-224 (any family loads)."""
    return ClipFrameEncoder.from_pretrained(id_or_path or DEFAULT_SIGLIP, **kwargs)


def load_clip(id_or_path: str | None = None, **kwargs: Any) -> ClipFrameEncoder:
    """Registry factory of ``clip``: default openai/clip-vit-base-patch32 (any family loads)."""
    return ClipFrameEncoder.from_pretrained(id_or_path or DEFAULT_CLIP, **kwargs)
