"""The ColQwen3 model on transformers' native Qwen3-VL classes: a Qwen3-VL model plus the 320-d projection
head, and the loader that maps the published checkpoint's keys onto it (a missing or unexpected key is an
error, never a silent re-initialisation), optionally spread over several GPUs. The Qwen3-VL config and the
mapped loading are shared with the Qwen3-VL-Embedding and -Reranker models (:mod:`maxsim.encoders.qwen3vl`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maxsim.encoders.qwen3vl import (
    CheckpointKeyError,
    backbone_config,
    fast_patch_embed,
    load_mapped,
    map_keys,
    read_config,
)

# Published checkpoint prefix -> prefix in ColQwen3Model. The remote code keeps a whole
# Qwen3VLForConditionalGeneration under ``vlm``; we keep only its Qwen3VLModel (``vlm.model``).
KEY_MAP: tuple[tuple[str, str], ...] = (
    ("vlm.model.visual.", "vlm.visual."),
    ("vlm.model.language_model.", "vlm.language_model."),
    ("embedding_proj_layer.", "embedding_proj_layer."),
)
# Checkpoint tensors that exist but are not used by a retrieval encoder.
IGNORED_KEYS: frozenset[str] = frozenset({"vlm.lm_head.weight"})
LAYOUT = "ColQwen3 (vlm.model.visual.*, vlm.model.language_model.*, embedding_proj_layer.*)"
# Config ``model_type`` values of checkpoints in this layout.
MODEL_TYPES: tuple[str, ...] = ("colqwen3",)


def map_checkpoint_keys(checkpoint_keys: Sequence[str], model_keys: Sequence[str]) -> dict[str, str]:
    """Map published checkpoint keys to model keys; raise :class:`CheckpointKeyError` listing every
    missing or unexpected key."""
    return map_keys(checkpoint_keys, model_keys, KEY_MAP, IGNORED_KEYS, LAYOUT)


class ColQwen3Model(nn.Module):
    """Qwen3-VL (vision tower + language model) and the projection to the embedding dimension."""

    def __init__(self, config, embed_dim: int):
        super().__init__()
        from transformers import Qwen3VLModel

        self.config = config
        self.vlm = Qwen3VLModel(config)
        self.embedding_proj_layer = nn.Linear(config.text_config.hidden_size, embed_dim)
        fast_patch_embed(self.vlm.visual)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """(batch, seq, embed_dim) float32 rows, L2-normalised; padded positions are zero."""
        self.vlm.rope_deltas = None  # the native model caches M-RoPE deltas for generation; we never decode
        out = self.vlm(**inputs, use_cache=False, return_dict=True)
        hidden = out.last_hidden_state
        proj = self.embedding_proj_layer
        emb = proj(hidden.to(proj.weight.device, proj.weight.dtype)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return emb * inputs["attention_mask"].to(emb.device, emb.dtype).unsqueeze(-1)


def load_colqwen3_model(
    folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    max_memory: dict[Any, Any] | None = None,
) -> ColQwen3Model:
    """Build the model without allocating weights, then fill every weight from the checkpoint's
    safetensors through :data:`KEY_MAP` (placing each tensor on its device as it is read)."""
    from accelerate import init_empty_weights

    cfg = read_config(folder)
    embed_dim = cfg.get("embed_dim", cfg.get("embedding_dim"))
    if not isinstance(embed_dim, int):
        raise ValueError(f"{folder / 'config.json'} has no integer 'embed_dim' (the projection size)")
    config = backbone_config(cfg, attn_implementation)
    with init_empty_weights(include_buffers=False):
        model = ColQwen3Model(config, embed_dim)
    return load_mapped(model, folder, map_checkpoint_keys, device, dtype, device_map, max_memory)


__all__ = [
    "IGNORED_KEYS", "KEY_MAP", "LAYOUT", "MODEL_TYPES", "CheckpointKeyError", "ColQwen3Model",
    "backbone_config", "load_colqwen3_model", "map_checkpoint_keys",
]
