"""What every Qwen3-VL based model here shares: the native config from a checkpoint's config.json, a
loader that fills a model from safetensors through an explicit key map (a missing or unexpected key is an
error, never a silently re-initialised weight), and a clip's frames turned into the video input of the
published Qwen3-VL format (frame pairs with ``<t seconds>`` markers).

Used by the ColQwen3 encoder, the Qwen3-VL-Embedding encoder and the Qwen3-VL-Reranker.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maxsim.encoders.checkpoint import weight_files
from maxsim.encoders.common import clip_frames, pad_batch
from maxsim.types import Clip

# Blocks accelerate must not split across devices.
NO_SPLIT = ["Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock"]


class CheckpointKeyError(ValueError):
    """A checkpoint's tensors do not match the model's weights one to one."""


def _show(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def map_keys(
    checkpoint_keys: Sequence[str],
    model_keys: Sequence[str],
    key_map: Sequence[tuple[str, str]],
    ignored: frozenset[str] | set[str],
    layout: str,
) -> dict[str, str]:
    """Map checkpoint keys to model keys by prefix (the first of ``key_map`` that matches); raise
    :class:`CheckpointKeyError` listing every model weight the checkpoint lacks and every checkpoint
    tensor (outside ``ignored``) that maps to none. ``layout`` names the expected layout in the error."""
    mapping: dict[str, str] = {}
    unexpected: list[str] = []
    for key in checkpoint_keys:
        if key in ignored:
            continue
        for src, dst in key_map:
            if key.startswith(src):
                mapping[key] = dst + key[len(src):]
                break
        else:
            unexpected.append(key)
    wanted = set(model_keys)
    unexpected += sorted(k for k, v in mapping.items() if v not in wanted)
    missing = sorted(wanted - set(mapping.values()))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {_show(missing)}")
        if unexpected:
            parts.append(f"unexpected in the checkpoint: {_show(sorted(unexpected))}")
        raise CheckpointKeyError(f"checkpoint does not match the {layout} layout: " + "; ".join(parts))
    return mapping


def backbone_config(cfg: dict[str, Any], attn_implementation: str | None = None):
    """A native ``Qwen3VLConfig`` from a checkpoint's config.json contents (a Qwen3-VL checkpoint, or one
    that nests it under ``vlm_config``), with RoPE settings of transformers 4.x checkpoints converted."""
    from transformers import Qwen3VLConfig

    if isinstance(cfg.get("vlm_config"), dict):  # layouts that nest the backbone config
        cfg = {**cfg["vlm_config"], **{k: v for k, v in cfg.items() if k != "vlm_config"}}
    for sub in ("text_config", "vision_config"):
        if not isinstance(cfg.get(sub), dict):
            raise ValueError(f"config.json has no {sub!r} section; expected a Qwen3-VL config")
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


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed config.json of a checkpoint folder."""
    return json.loads((folder / "config.json").read_text())


def _patch_embed_as_matmul(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Qwen3-VL's patch embedding (a Conv3d whose kernel equals its stride over exactly one patch) as the
    equivalent matrix product: same weights and result, without the slow CPU bf16 convolution path."""
    weight = self.proj.weight
    flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
    return nn.functional.linear(flat, weight.reshape(weight.shape[0], -1), self.proj.bias)


def fast_patch_embed(visual: nn.Module) -> None:
    """Make a Qwen3-VL vision tower embed its patches with one matrix product (see above)."""
    patch_embed = visual.patch_embed
    patch_embed.forward = types.MethodType(_patch_embed_as_matmul, patch_embed)


def placement(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | dict[str, Any] | None,
    max_memory: dict[Any, Any] | None,
    no_split: Sequence[str] = tuple(NO_SPLIT),
) -> dict[str, Any]:
    """Module name -> device: ``{"": device}`` without a device map, else accelerate's plan for
    ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``, or the dict given."""
    if device_map is None:
        return {"": str(device)}
    if isinstance(device_map, dict):
        return dict(device_map)
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if device_map in ("auto", "balanced", "balanced_low_0"):
        if max_memory is None or device_map != "auto":
            max_memory = get_balanced_memory(
                model, max_memory=max_memory, no_split_module_classes=list(no_split), dtype=dtype,
                low_zero=device_map == "balanced_low_0",
            )
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return infer_auto_device_map(
            model, max_memory=max_memory, no_split_module_classes=list(no_split), dtype=dtype
        )
    return {"": device_map}


def checkpoint_keys(folder: Path) -> dict[str, Path]:
    """Every tensor name of a checkpoint folder's safetensors and the file that holds it."""
    from safetensors import safe_open

    keys: dict[str, Path] = {}
    for f in weight_files(folder):
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                keys[k] = f
    return keys


def load_mapped(
    model: nn.Module,
    folder: Path,
    map_fn: Callable[[list[str], list[str]], dict[str, str]],
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
) -> nn.Module:
    """Fill ``model`` (built without weights, under ``accelerate.init_empty_weights``) from the
    checkpoint's safetensors: ``map_fn(checkpoint_keys, model_keys)`` gives checkpoint key -> model key
    and raises on any mismatch; a tensor of the wrong shape is a :class:`CheckpointKeyError` too. Each
    tensor goes to its device as it is read; several devices (``device_map``) dispatch the model."""
    from safetensors import safe_open
    from tqdm.auto import tqdm

    files = weight_files(folder)
    expected = model.state_dict()
    mapping = map_fn(list(checkpoint_keys(folder)), list(expected))
    plan = placement(model, device, dtype, device_map, max_memory)
    if "disk" in {str(v) for v in plan.values()}:
        raise ValueError(
            f"device_map {device_map!r} would offload weights to disk, which this loader does not do; give "
            "max_memory room for the whole model on GPUs and the CPU"
        )

    def device_of(key: str) -> torch.device:
        owners = [p for p in plan if p == "" or key == p or key.startswith(p + ".")]
        if not owners:
            raise ValueError(f"device_map {device_map!r} places no module holding {key}")
        where = plan[max(owners, key=len)]
        return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)

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
    if len({str(v) for v in plan.values()}) > 1:
        from accelerate import dispatch_model

        model = dispatch_model(model, device_map=plan)
    return model.eval()


# -- video input --------------------------------------------------------------------------------------
@dataclass
class VideoInput:
    """One clip as Qwen3-VL video input: the token ids of its video block (a ``<t seconds>`` marker and a
    ``<|vision_start|><|video_pad|>*n<|vision_end|>`` block per frame group, as the published processor
    expands the video placeholder), the processor's pixel patches and grid, and each group's time."""

    ids: list[int]
    pixels: torch.Tensor
    grid: torch.Tensor  # (3,) groups, patch rows, patch columns
    group_times: np.ndarray  # seconds in the video: the mean time of each group's frames
    per_group: int  # visual tokens per frame group


@dataclass(frozen=True)
class VideoFormat:
    """How a model turns frames into video tokens: its video processor, the special token ids, and a
    tokenizer function for the timestamp markers."""

    processor: Any  # a transformers Qwen3VLVideoProcessor
    tokenize: Callable[[str], list[int]]
    video_token_id: int
    vision_start_id: int
    vision_end_id: int

    @property
    def patch(self) -> int:
        return int(self.processor.patch_size)

    @property
    def merge(self) -> int:
        return int(self.processor.merge_size)

    @property
    def temporal(self) -> int:
        return int(self.processor.temporal_patch_size)

    @property
    def tile(self) -> int:
        """Pixels per side of one visual token (patch x merge)."""
        return self.patch * self.merge

    def check(self, vision_config: Any) -> None:
        """Raise ValueError when the processor's patching differs from the model's vision config."""
        mine = (self.patch, self.merge, self.temporal)
        cfg = (vision_config.patch_size, vision_config.spatial_merge_size, vision_config.temporal_patch_size)
        if mine != cfg:
            raise ValueError(
                f"video processor (patch {mine[0]}, merge {mine[1]}, temporal {mine[2]}) does not match the "
                f"vision config ({cfg[0]}, {cfg[1]}, {cfg[2]})"
            )

    def min_pixels(self) -> int:
        """The smallest frame group the processor makes (its ``size.shortest_edge``, in pixels)."""
        size = self.processor.size
        low = getattr(size, "shortest_edge", None)
        if low is None and isinstance(size, dict):
            low = size.get("shortest_edge")
        return int(low or self.tile * self.tile * self.temporal)

    def prepare(
        self,
        clip: Clip,
        max_frames: int,
        max_tokens: int,
        absolute_timestamps: bool = False,
        device: str | None = None,
    ) -> VideoInput:
        """A clip's frames (thinned to ``max_frames``, the last one repeated to complete the last group)
        as video input whose frames are resized so that the clip has at most ``max_tokens`` visual
        tokens. Timestamp markers count from the clip start (``absolute_timestamps``: the video start)."""
        from transformers.video_utils import VideoMetadata

        frames, times = clip_frames(clip, max_frames)
        if pad := -len(frames) % self.temporal:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
            times = np.concatenate([times, np.repeat(times[-1:], pad)])
        n = len(frames)
        rel = times if absolute_timestamps else times - clip.start
        span = float(rel[-1] - rel[0])
        fps = (n - 1) / span if n > 1 and span > 0 else 1.0
        metadata = VideoMetadata(
            total_num_frames=n, fps=fps, frames_indices=np.round((rel - rel[0]) * fps).astype(int),
            duration=span,
        )
        max_pixels = max(1, int(max_tokens)) * self.tile * self.tile * self.temporal
        feats = self.processor(
            videos=[frames], video_metadata=[metadata], do_sample_frames=False,
            cap_pixels_per_frame=False,  # the budget is per clip, spread over its frames
            device=device,
            size={"shortest_edge": min(self.min_pixels(), max_pixels), "longest_edge": max_pixels},
            return_tensors="pt",
        )
        grid = feats["video_grid_thw"][0]
        groups, gh, gw = (int(x) for x in grid)
        per_group = gh * gw // (self.merge * self.merge)
        group_times = times.reshape(groups, self.temporal).mean(axis=1)
        marks = rel.reshape(groups, self.temporal).mean(axis=1)
        ids: list[int] = []
        for mark in marks:
            ids += self.tokenize(f"<{mark:.1f} seconds>")
            ids += [self.vision_start_id] + [self.video_token_id] * per_group + [self.vision_end_id]
        return VideoInput(ids, feats["pixel_values_videos"], grid, group_times, per_group)

    def tokens_for(self, n_frames: int, height: int, width: int, max_tokens: int) -> int:
        """Visual tokens a clip of ``n_frames`` frames of this size gets under ``max_tokens``."""
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        n = max(n_frames, 1)
        n += -n % self.temporal
        max_pixels = max(1, int(max_tokens)) * self.tile * self.tile * self.temporal
        h, w = smart_resize(
            n, height, width, temporal_factor=self.temporal, factor=self.tile,
            min_pixels=min(self.min_pixels(), max_pixels), max_pixels=max_pixels,
        )
        return (n // self.temporal) * (h // self.patch) * (w // self.patch) // (self.merge * self.merge)


def group_count(n_frames: int, temporal: int = 2) -> int:
    """Frame groups (temporal patches) of a clip of ``n_frames`` frames."""
    return max(1, -(-max(int(n_frames), 1) // temporal))


def model_inputs(
    seqs: Sequence[list[int]],
    videos: Sequence[VideoInput],
    pad_id: int | None,
    video_token_id: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Inputs of one forward pass of a Qwen3VLModel over sequences left padded to one length, with their
    videos (one per sequence, in order; none for a text-only batch). Returns the inputs, and the id and
    attention-mask matrices on the CPU."""
    ids, mask = pad_batch(list(seqs), pad_id, left=True)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if videos:
        inputs["mm_token_type_ids"] = ((ids == video_token_id).long() * 2).to(device)
        inputs["pixel_values_videos"] = torch.cat([v.pixels for v in videos]).to(device)
        inputs["video_grid_thw"] = torch.stack([v.grid for v in videos]).to(device)
    return inputs, ids, mask


# -- native Qwen3-VL checkpoints (Qwen3-VL-Embedding, Qwen3-VL-Reranker) -------------------------------
# A checkpoint saved from Qwen3VLForConditionalGeneration (or the embedding script's Qwen3VLForEmbedding):
# ``model.visual.*``, ``model.language_model.*`` and, unless the embeddings are tied, ``lm_head.weight``.
NATIVE_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("model.visual.", "vlm.visual."),
    ("model.language_model.", "vlm.language_model."),
)
NATIVE_LAYOUT = "Qwen3-VL (model.visual.*, model.language_model.*, optional lm_head.weight)"
LM_HEAD = "lm_head.weight"
NATIVE_MODEL_TYPES: tuple[str, ...] = ("qwen3_vl",)


def map_native_keys(checkpoint_keys: Sequence[str], model_keys: Sequence[str]) -> dict[str, str]:
    """:func:`map_keys` for the native Qwen3-VL layout (``lm_head.weight`` is read apart, if at all)."""
    return map_keys(checkpoint_keys, model_keys, NATIVE_KEY_MAP, frozenset({LM_HEAD}), NATIVE_LAYOUT)


class LastTokenModel(nn.Module):
    """A Qwen3-VL model (vision tower + language model, no LM head) that returns the final hidden state
    at the last position of each sequence: the input sequences are left padded, so that is every
    sequence's last token."""

    def __init__(self, config):
        super().__init__()
        from transformers import Qwen3VLModel

        self.config = config
        self.vlm = Qwen3VLModel(config)
        fast_patch_embed(self.vlm.visual)

    @property
    def input_device(self) -> torch.device:
        return self.vlm.language_model.embed_tokens.weight.device

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """(batch, hidden) float32: the last position's final hidden state."""
        self.vlm.rope_deltas = None  # the native model caches M-RoPE deltas for generation; we never decode
        out = self.vlm(**inputs, use_cache=False, return_dict=True)
        return out.last_hidden_state[:, -1].float()


def check_native_config(folder: Path, cfg: dict[str, Any], family: str) -> None:
    """Raise ValueError unless ``cfg`` (the folder's config.json) is a native Qwen3-VL config."""
    mt = cfg.get("model_type")
    if mt not in NATIVE_MODEL_TYPES:
        raise ValueError(
            f"{folder / 'config.json'} has model_type {mt!r}; {family} expects a Qwen3-VL checkpoint "
            f"(model_type {' or '.join(map(repr, NATIVE_MODEL_TYPES))}) such as Qwen/{family}-2B"
        )


def load_last_token_model(
    folder: Path,
    family: str,
    device: torch.device,
    dtype: torch.dtype,
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str | None = None,
    max_memory: dict[Any, Any] | None = None,
) -> LastTokenModel:
    """A :class:`LastTokenModel` filled from a native Qwen3-VL checkpoint folder through
    :data:`NATIVE_KEY_MAP` (every weight from the checkpoint, every tensor used; ``lm_head.weight``
    excepted)."""
    from accelerate import init_empty_weights

    cfg = read_config(folder)
    check_native_config(folder, cfg, family)
    config = backbone_config(cfg, attn_implementation)
    with init_empty_weights(include_buffers=False):
        model = LastTokenModel(config)
    return load_mapped(model, folder, map_native_keys, device, dtype, device_map, max_memory)


def punctuated(instruction: str) -> str:
    """An instruction stripped and ending in punctuation (a full stop is added otherwise), as the
    published Qwen3-VL-Embedding formatter does."""
    import unicodedata

    text = instruction.strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text


def chat_ids(tokenize: Callable[[str], list[int]], system: str, user_before: str, video: list[int] | None,
             user_after: str = "") -> list[int]:
    """Token ids of a one-turn Qwen chat with the generation prompt, as the Qwen3-VL chat template writes
    it: ``<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user_before}{video}{user_after}
    <|im_end|>\\n<|im_start|>assistant\\n`` (``video``: ids of an expanded video block, or None)."""
    ids = tokenize(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user_before}")
    if video:
        ids += video
    return ids + tokenize(f"{user_after}<|im_end|>\n<|im_start|>assistant\n")


def read_rows(folder: Path, key: str, rows: Sequence[int]) -> torch.Tensor:
    """Rows ``rows`` of the 2-d tensor ``key`` of a checkpoint folder, read without loading the rest."""
    from safetensors import safe_open

    where = checkpoint_keys(folder).get(key)
    if where is None:
        raise KeyError(f"{folder} has no tensor {key!r}")
    with safe_open(str(where), framework="pt") as fh:
        sl = fh.get_slice(key)
        return torch.stack([sl[int(r):int(r) + 1][0] for r in rows])
