"""Tiny random-weight checkpoints for offline tests, each in its family's published layout and file names:
a ColQwen3 (Qwen3-VL backbone) in the TomoroAI layout, a ColQwen2 saved by transformers, native Qwen3-VL
checkpoints (Qwen3-VL-Embedding / -Reranker layout), and CLIP, SigLIP (SigLIP 2 fixed resolution: Gemma
tokenizer) and SigLIP 2 NaFlex models. Real tokenizer and processor classes; nothing is downloaded."""

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


def build_tokenizer(extra_merges: tuple[str, ...] = ()):
    """A byte-level BPE Qwen2 tokenizer with the Qwen special tokens as single tokens (``extra_merges``:
    more merges, e.g. to make "yes" and "no" single tokens as in the real vocabulary)."""
    from transformers import Qwen2Tokenizer

    vocab = {sym: i for i, sym in enumerate(_bytes_to_unicode().values())}
    merges_all = [*_MERGES, *extra_merges]
    for m in merges_all:
        merged = m.replace(" ", "")
        if merged not in vocab:
            vocab[merged] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges_all])
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


def save_processor_files(folder: Path, tok, processor_class: str = "ColQwen3Processor",
                         auto_map: dict | None = None) -> None:
    """Tokenizer, image and video processor files as a Qwen3-VL checkpoint ships them (``processor_class``
    and ``auto_map`` written into each, as the published ColQwen3 files name its remote-code processor)."""
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
    # The published checkpoints were saved by transformers 4.x: separate processor files, each naming the
    # processor class (ColQwen3: its remote-code one). Our loaders read them with the native classes.
    if auto_map is None and processor_class == "ColQwen3Processor":
        auto_map = {"AutoProcessor": "processing_colqwen3.ColQwen3Processor"}
    tok.save_pretrained(str(folder))
    image_processor.save_pretrained(str(folder))
    video_processor.save_pretrained(str(folder))
    for name in ("tokenizer_config.json", "preprocessor_config.json", "video_preprocessor_config.json"):
        path = folder / name
        data = json.loads(path.read_text())
        data["processor_class"] = processor_class
        if auto_map:
            data["auto_map"] = auto_map
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


# -- native Qwen3-VL (Qwen3-VL-Embedding / Qwen3-VL-Reranker layout) ----------------------------------------
YES_NO_MERGES = ("y e", "ye s", "n o")  # "yes" and "no" are single tokens of the real Qwen vocabulary


def qwen3vl_config_dict(tok, tie: bool = True) -> dict:
    """A config.json shaped like the published Qwen3-VL-Embedding-2B one (native ``qwen3_vl``, saved by
    transformers 4.57: rope_scaling + rope_theta, vision model_type ``qwen3_vl``), tiny sizes."""
    cfg = colqwen3_config_dict(tok)
    for key in ("auto_map", "embed_dim", "padding_side"):
        cfg.pop(key)
    cfg["architectures"] = ["Qwen3VLForConditionalGeneration"]
    cfg["model_type"] = "qwen3_vl"
    cfg["tie_word_embeddings"] = tie
    cfg["text_config"]["tie_word_embeddings"] = tie
    cfg["vision_config"]["model_type"] = "qwen3_vl"
    return cfg


def qwen3vl_state_dict(cfg: dict, seed: int = 0, tie: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the published key names of a Qwen3VLForConditionalGeneration checkpoint:
    ``model.visual.*``, ``model.language_model.*`` and, unless the word embeddings are tied,
    ``lm_head.weight`` (tied checkpoints leave it out)."""
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    vlm = Qwen3VLForConditionalGeneration(_qwen3vl_config(cfg)).eval()
    with torch.no_grad():
        for p in vlm.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = {k: v.detach().clone().contiguous() for k, v in vlm.state_dict().items()}
    if tie:
        del sd["lm_head.weight"]
    return sd


def build_tiny_qwen3vl(folder: str | Path, seed: int = 0, tie: bool = True, shards: int = 1,
                       state_dict_edit=None) -> Path:
    """Save a tiny random native Qwen3-VL checkpoint (Qwen3-VL-Embedding / -Reranker layout: config.json,
    safetensors, tokenizer, preprocessor and video preprocessor files) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(YES_NO_MERGES)
    cfg = qwen3vl_config_dict(tok, tie=tie)
    sd = qwen3vl_state_dict(cfg, seed=seed, tie=tie)
    if state_dict_edit is not None:
        state_dict_edit(sd)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    save_processor_files(folder, tok, processor_class="Qwen3VLProcessor")
    save_safetensors(folder, sd, shards=shards)
    return folder


# -- CLIP / SigLIP / SigLIP 2 --------------------------------------------------------------------------------
def build_clip_tokenizer():
    """A byte-level BPE CLIP tokenizer (``</w>`` word ends) with CLIP's start/end-of-text tokens."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {sym: i for i, sym in enumerate(symbols)}
    for sym in symbols:
        vocab[sym + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("o", "n</w>"), ("a", "r")]
    for m in merges:
        vocab.setdefault("".join(m), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build_gemma_tokenizer():
    """A BPE Gemma tokenizer (SentencePiece-style ``▁`` words, byte fallback), as SigLIP 2 ships."""
    import string

    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for i in range(256):
        vocab[f"<0x{i:02X}>"] = len(vocab)
    for c in "▁" + string.ascii_letters + string.digits + ".,'!?":
        vocab.setdefault(c, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "a")]
    for m in merges:
        vocab.setdefault("".join(m), len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=merges, padding_side="right")


def _perturb(model, seed: int) -> None:
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIP (ViT, patch 8 at 32 px; 24-token text) saved as openai/clip-vit-* checkpoints
    are: config.json, model.safetensors, tokenizer files, preprocessor_config.json."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 24,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                     "pad_token_id": tok.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=24,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    _perturb(model, seed)
    model.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(folder))
    tok.save_pretrained(str(folder))
    return folder


def build_tiny_siglip(folder: str | Path, seed: int = 0, naflex: bool = False) -> Path:
    """A tiny random SigLIP in the layout of SigLIP 2's fixed-resolution checkpoints (``siglip`` model,
    Gemma tokenizer, 32x32 squash resize), or with ``naflex`` a SigLIP 2 NaFlex one (``siglip2`` model,
    aspect-preserving resize to at most 16 patches of 8 px)."""
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_gemma_tokenizer()
    text = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "patch_size": 8}
    torch.manual_seed(seed)
    if naflex:
        config = Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16})
        model = Siglip2Model(config).eval()
        processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    else:
        model = SiglipModel(SiglipConfig(text_config=text, vision_config={**vision, "image_size": 32})).eval()
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    _perturb(model, seed)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
