"""The ColQwen3 model on transformers' native Qwen3-VL classes: the backbone config, a Qwen3-VL model plus
the 320-d projection head, and the loader that maps the published checkpoint's keys onto it (a missing or
unexpected key is an error, never a silent re-initialisation), optionally spread over several GPUs."""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maxsim.encoders.checkpoint import weight_files

# Published checkpoint prefix -> prefix in ColQwen3Model. The remote code keeps a whole
# Qwen3VLForConditionalGeneration under ``vlm``; we keep only its Qwen3VLModel (``vlm.model``).
KEY_MAP: tuple[tuple[str, str], ...] = (
    ("vlm.model.visual.", "vlm.visual."),
    ("vlm.model.language_model.", "vlm.language_model."),
    ("embedding_proj_layer.", "embedding_proj_layer."),
)
# Checkpoint tensors that exist but are not used by a retrieval encoder.
IGNORED_KEYS: frozenset[str] = frozenset({"vlm.lm_head.weight"})
# Config ``model_type`` values of checkpoints in this layout.
MODEL_TYPES: tuple[str, ...] = ("colqwen3",)


class CheckpointKeyError(ValueError):
    """A checkpoint's tensors do not match the model's weights one to one."""


def map_checkpoint_keys(checkpoint_keys: Sequence[str], model_keys: Sequence[str]) -> dict[str, str]:
    """Map published checkpoint keys to model keys; raise :class:`CheckpointKeyError` listing every
    missing or unexpected key."""
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for key in checkpoint_keys:
        if key in IGNORED_KEYS:
            continue
        for src, dst in KEY_MAP:
            if key.startswith(src):
                mapping[key] = dst + key[len(src):]
                break
        else:
            unexpected.append(key)
    wanted = set(model_keys)
    unexpected += sorted(k for k, v in mapping.items() if v not in wanted)
    missing = sorted(wanted - set(mapping.values()))
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected in the checkpoint: {show(sorted(unexpected))}")
        raise CheckpointKeyError(
            "checkpoint does not match the ColQwen3 layout (vlm.model.visual.*, vlm.model.language_model.*, "
            "embedding_proj_layer.*): " + "; ".join(parts)
        )
    return mapping


def backbone_config(cfg: dict[str, Any], attn_implementation: str | None = None):
    """A native ``Qwen3VLConfig`` from the published checkpoint's config.json contents."""
    from transformers import Qwen3VLConfig

    if isinstance(cfg.get("vlm_config"), dict):  # layouts that nest the backbone config
        cfg = {**cfg["vlm_config"], **{k: v for k, v in cfg.items() if k != "vlm_config"}}
    for sub in ("text_config", "vision_config"):
        if not isinstance(cfg.get(sub), dict):
            raise ValueError(f"config.json has no {sub!r} section; expected a ColQwen3 (Qwen3-VL) config")
    text = dict(cfg["text_config"])
    # Checkpoints saved by transformers 4.x keep RoPE settings in rope_scaling + rope_theta.
    if "rope_parameters" not in text and isinstance(text.get("rope_scaling"), dict):
        rope = dict(text.pop("rope_scaling"))
        if "rope_theta" in text:
            rope["rope_theta"] = text.pop("rope_theta")
        rope.setdefault("rope_type", rope.pop("type", "default"))
        text["rope_parameters"] = rope
    vision = dict(cfg["vision_config"])
    if vision.get("model_type") == "qwen3_vl":
        vision["model_type"] = "qwen3_vl_vision"
    kwargs = {
        k: cfg[k]
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        if k in cfg
    }
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **kwargs)
    impl = attn_implementation or "sdpa"
    for c in (config, config.text_config, config.vision_config):
        c._attn_implementation = impl
    return config


def _patch_embed_as_matmul(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Qwen3-VL's patch embedding (a Conv3d whose kernel equals its stride over exactly one patch) as the
    equivalent matrix product: same weights and result, without the slow CPU bf16 convolution path."""
    weight = self.proj.weight
    flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
    return nn.functional.linear(flat, weight.reshape(weight.shape[0], -1), self.proj.bias)


class ColQwen3Model(nn.Module):
    """Qwen3-VL (vision tower + language model) and the projection to the embedding dimension."""

    def __init__(self, config, embed_dim: int):
        super().__init__()
        from transformers import Qwen3VLModel

        self.config = config
        self.vlm = Qwen3VLModel(config)
        self.embedding_proj_layer = nn.Linear(config.text_config.hidden_size, embed_dim)
        patch_embed = self.vlm.visual.patch_embed
        patch_embed.forward = types.MethodType(_patch_embed_as_matmul, patch_embed)

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
    from safetensors import safe_open

    cfg = json.loads((folder / "config.json").read_text())
    embed_dim = cfg.get("embed_dim", cfg.get("embedding_dim"))
    if not isinstance(embed_dim, int):
        raise ValueError(f"{folder / 'config.json'} has no integer 'embed_dim' (the projection size)")
    config = backbone_config(cfg, attn_implementation)
    with init_empty_weights(include_buffers=False):
        model = ColQwen3Model(config, embed_dim)
    model_keys = list(model.state_dict().keys())

    files = weight_files(folder)
    checkpoint_keys: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                checkpoint_keys[k] = f
    mapping = map_checkpoint_keys(list(checkpoint_keys), model_keys)

    placement = _placement(model, device, dtype, device_map, max_memory)
    if "disk" in {str(v) for v in placement.values()}:
        raise ValueError(
            f"device_map {device_map!r} would offload weights to disk, which this loader does not do; give "
            "max_memory room for the whole model on GPUs and the CPU"
        )

    def device_of(key: str) -> torch.device:
        owners = [p for p in placement if p == "" or key == p or key.startswith(p + ".")]
        if not owners:
            raise ValueError(f"device_map {device_map!r} places no module holding {key}")
        where = placement[max(owners, key=len)]
        return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)

    from tqdm.auto import tqdm

    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(mapping), desc="loading weights", unit="tensor", disable=len(mapping) < 200 or None)
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                if k not in mapping:
                    continue
                bar.update()
                target = mapping[k]
                t = fh.get_tensor(k)
                if tuple(t.shape) != tuple(expected[target].shape):
                    raise CheckpointKeyError(
                        f"{f.name}: tensor {k} has shape {tuple(t.shape)}, but the config gives "
                        f"{target} the shape {tuple(expected[target].shape)}"
                    )
                cast = dtype if t.is_floating_point() else t.dtype
                state[target] = t.to(device=device_of(target), dtype=cast)
    bar.close()
    model.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers (rotary frequencies) were built on the CPU: move them next to their weights.
    from accelerate.utils import set_module_tensor_to_device

    for name, buf in list(model.named_buffers()):
        if buf.device.type == "meta":  # pragma: no cover - guarded by include_buffers=False
            raise RuntimeError(f"buffer {name} was not initialised")
        set_module_tensor_to_device(model, name, device_of(name), value=buf)
    if len({str(v) for v in placement.values()}) > 1:
        from accelerate import dispatch_model

        model = dispatch_model(model, device_map=placement)
    return model.eval()


def _placement(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | dict[str, Any] | None,
    max_memory: dict[Any, Any] | None,
) -> dict[str, Any]:
    if device_map is None:
        return {"": str(device)}
    if isinstance(device_map, dict):
        return dict(device_map)
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = ["Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock"]
    if device_map in ("auto", "balanced", "balanced_low_0"):
        if max_memory is None or device_map != "auto":
            max_memory = get_balanced_memory(
                model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
                low_zero=device_map == "balanced_low_0",
            )
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return infer_auto_device_map(
            model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype
        )
    return {"": device_map}
