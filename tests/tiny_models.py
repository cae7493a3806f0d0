"""Tiny random-weight checkpoints for offline tests: a ColQwen3 (Qwen3-VL backbone) saved in the published
TomoroAI checkpoint layout, and a ColQwen2 saved by transformers. Real tokenizer and processor classes;
nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# A few byte-level merges so that ordinary words are not all single bytes.
_MERGES = ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "e r", "Ġt he", "e d", "Ġ s", "e n", "s e"]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_tokenizer():
    """A byte-level BPE Qwen2 tokenizer with the Qwen special tokens as single tokens."""
    from transformers import Qwen2Tokenizer

    vocab = {sym: i for i, sym in enumerate(_bytes_to_unicode().values())}
    for m in _MERGES:
        merged = m.replace(" ", "")
        if merged not in vocab:
            vocab[merged] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in _MERGES])
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tok.pad_token = "<|endoftext|>"
    return tok


def _token_ids(tok) -> dict[str, int]:
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    assert len(set(ids.values())) == len(ids), ids
    return ids


def _vocab_size(tok) -> int:
    return ((len(tok) + 63) // 64) * 64


def colqwen3_config_dict(tok, embed_dim: int = 32) -> dict:
    """A config.json shaped like the published TomoroAI one (remote-code ``colqwen3``), tiny sizes."""
    ids = _token_ids(tok)
    return {
        "architectures": ["ColQwen3"],
        "auto_map": {
            "AutoConfig": "configuration_colqwen3.ColQwen3Config",
            "AutoModel": "modeling_colqwen3.ColQwen3",
        },
        "model_type": "colqwen3",
        "dtype": "float32",
        "embed_dim": embed_dim,
        "padding_side": "left",
        "initializer_range": 0.02,
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": _vocab_size(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            "rope_theta": 5000000,
            "attention_bias": False,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        "vision_config": {
            "model_type": "qwen3_vl_vision",
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
            "hidden_act": "gelu_pytorch_tanh",
        },
    }


def _qwen3vl_config(cfg: dict):
    from transformers import Qwen3VLConfig

    text = dict(cfg["text_config"])
    rope = dict(text.pop("rope_scaling"))
    rope["rope_theta"] = text.pop("rope_theta")
    text["rope_parameters"] = rope
    return Qwen3VLConfig(
        text_config=text,
        vision_config=dict(cfg["vision_config"]),
        image_token_id=cfg["image_token_id"],
        video_token_id=cfg["video_token_id"],
        vision_start_token_id=cfg["vision_start_token_id"],
        vision_end_token_id=cfg["vision_end_token_id"],
    )


def colqwen3_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the published key names: the remote code keeps a whole
    Qwen3VLForConditionalGeneration as ``vlm`` (so ``vlm.model.*`` and ``vlm.lm_head``) next to
    ``embedding_proj_layer``."""
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    vlm = Qwen3VLForConditionalGeneration(_qwen3vl_config(cfg)).eval()
    # Random init leaves norms at 1 and biases at 0; perturb everything so a mis-mapped key shows.
    with torch.no_grad():
        for p in vlm.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = {f"vlm.{k}": v.detach().clone().contiguous() for k, v in vlm.state_dict().items()}
    hidden = cfg["text_config"]["hidden_size"]
    proj = torch.nn.Linear(hidden, cfg["embed_dim"])
    sd["embedding_proj_layer.weight"] = proj.weight.detach().clone()
    sd["embedding_proj_layer.bias"] = proj.bias.detach().clone()
    return sd


def save_processor_files(folder: Path, tok) -> None:
    """Tokenizer, image and video processor files as a Qwen3-VL checkpoint ships them."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32 * 64},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 32 * 32 * 2, "longest_edge": 32 * 32 * 2 * 256},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        cap_pixels_per_frame=False, do_sample_frames=False,
    )
    # The published checkpoint was saved by transformers 4.x: separate processor files, each naming the
    # remote-code processor class. Our loader must read them with the native classes, ignoring auto_map.
    tok.save_pretrained(str(folder))
    image_processor.save_pretrained(str(folder))
    video_processor.save_pretrained(str(folder))
    for name in ("tokenizer_config.json", "preprocessor_config.json", "video_preprocessor_config.json"):
        path = folder / name
        data = json.loads(path.read_text())
        data["processor_class"] = "ColQwen3Processor"
        data["auto_map"] = {"AutoProcessor": "processing_colqwen3.ColQwen3Processor"}
        path.write_text(json.dumps(data, indent=1))


def save_safetensors(folder: Path, sd: dict[str, torch.Tensor], shards: int = 1) -> None:
    """Write ``sd`` as one file or as ``shards`` files with a ``model.safetensors.index.json``."""
    from safetensors.torch import save_file

    keys = sorted(sd)
    if shards == 1:
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    per = (len(keys) + shards - 1) // shards
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1)
    )


def build_tiny_colqwen3(folder: str | Path, seed: int = 0, embed_dim: int = 32, shards: int = 2,
                        state_dict_edit=None) -> Path:
    """Save a tiny random ColQwen3 checkpoint (published key layout, config, processor files) in ``folder``.

    ``state_dict_edit`` (optional) receives the state dict and may change it before it is written, to
    make deliberately broken checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    cfg = colqwen3_config_dict(tok, embed_dim=embed_dim)
    sd = colqwen3_state_dict(cfg, seed=seed)
    if state_dict_edit is not None:
        state_dict_edit(sd)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    save_processor_files(folder, tok)
    save_safetensors(folder, sd, shards=shards)
    return folder


def build_tiny_colqwen2(folder: str | Path, seed: int = 0, embed_dim: int = 32) -> Path:
    """Save a tiny random ColQwen2 (Qwen2-VL backbone) checkpoint with its processor in ``folder``."""
    from transformers import (
        ColQwen2Config,
        ColQwen2ForRetrieval,
        ColQwen2Processor,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    ids = _token_ids(tok)
    vlm_config = Qwen2VLConfig(
        text_config={
            "vocab_size": _vocab_size(tok), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0},
        },
        vision_config={
            "depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm_config, embedding_dim=embed_dim)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(str(folder))
    image_processor = Qwen2VLImageProcessor(
        patch_size=14, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 64},
    )
    ColQwen2Processor(image_processor=image_processor, tokenizer=tok).save_pretrained(str(folder))
    return folder
