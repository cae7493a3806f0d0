"""Every encoder family side by side at its real architecture size, with random weights (nothing downloaded).

Rows (:data:`ROWS`): SigLIP 2 ViT-B/16 and CLIP ViT-B/32 frame encoders (one vector per frame), ColQwen3-4B,
Qwen3-VL-Embedding-2B and the Qwen3-VL-Reranker-2B (per re-ranked hit), the Qwen models both at their
default visual-token budgets and at a CPU budget. Each row names the sampling it pairs with (frames per
segment of ``segment_seconds``), so "seconds per minute of video" compares like with like.

``measure`` rows are built on the device and timed on synthetic decoded 1080p clips (frames first scaled
to the encoder's ``frame_size`` as the frame sampler does at decode time, which is not timed); ``estimate``
rows only count FLOPs, and get a CPU time from the achieved FLOP/s of the measured row of the same
architecture. Every row gets a GPU estimate, ``FLOPs / (gpu_tflops x gpu_utilisation)``: a FLOP model,
not a measurement.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import os
import statistics
import time
from typing import Any

import torch
from maxsim.bench import encoder_bench
from maxsim.bench.timing import resolve_device, synchronize

# Qwen3-VL-2B (the backbone of Qwen3-VL-Embedding-2B and Qwen3-VL-Reranker-2B), as its config.json gives it.
QWEN3VL_2B: dict[str, Any] = {
    "model_type": "qwen3_vl",
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "rope_theta": 5000000,
    },
    "vision_config": {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "in_channels": 3,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2048,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
        "hidden_act": "gelu_pytorch_tanh",
    },
}
# google/siglip2-base-patch16-224 (SigLIP architecture, Gemma vocabulary, 64 text tokens).
SIGLIP2_BASE_224: dict[str, Any] = {
    "text_config": {"vocab_size": 256000, "hidden_size": 768, "intermediate_size": 3072,
                    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 64},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
}
# openai/clip-vit-base-patch32.
CLIP_B32: dict[str, Any] = {
    "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                    "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
    "projection_dim": 512,
}

# name -> family, architecture, frames per segment, the encoder's settings; "hits": a reranker row;
# "dtype": this row's dtype whatever the config's.
ROWS: dict[str, dict[str, Any]] = {
    "siglip2-base": {"family": "siglip", "arch": "siglip2-b16-224", "frames": 16},
    "siglip2-base-fp32": {"family": "siglip", "arch": "siglip2-b16-224", "frames": 16, "dtype": "float32"},
    "siglip2-base-4f": {"family": "siglip", "arch": "siglip2-b16-224", "frames": 4},  # the CPU sampling
    "clip-b32": {"family": "clip", "arch": "clip-b32", "frames": 16},
    "clip-b32-fp32": {"family": "clip", "arch": "clip-b32", "frames": 16, "dtype": "float32"},
    "colqwen3-4b": {"family": "colqwen3", "arch": "qwen3vl-4b", "frames": 16,
                    "settings": {"max_visual_tokens": 5120}},
    "colqwen3-4b-cpu": {"family": "colqwen3", "arch": "qwen3vl-4b", "frames": 4,
                        "settings": {"max_visual_tokens": 256, "max_frames": 4, "batch_tokens": 4096}},
    "qwen3-vl-embedding-2b": {"family": "qwen3-vl-embedding", "arch": "qwen3vl-2b", "frames": 16,
                              "settings": {}},
    "qwen3-vl-embedding-2b-cpu": {"family": "qwen3-vl-embedding", "arch": "qwen3vl-2b", "frames": 4,
                                  "settings": {"max_visual_tokens": 256, "max_frames": 4}},
    "qwen3-vl-reranker-2b": {"family": "qwen3-vl-reranker", "arch": "qwen3vl-2b", "frames": 16,
                             "settings": {}, "hits": True},
    "qwen3-vl-reranker-2b-cpu": {"family": "qwen3-vl-reranker", "arch": "qwen3vl-2b", "frames": 4,
                                 "settings": {"max_visual_tokens": 256, "max_frames": 4}, "hits": True},
}

DEFAULTS: dict[str, Any] = {
    "measure": ["siglip2-base", "clip-b32"],  # rows timed on the device
    "estimate": [],  # rows given by FLOPs only
    "device": "auto",
    "dtype": None,  # default: bfloat16 on a GPU and on a CPU with native bf16, else float32
    "n_clips": 4,
    "segment_seconds": 10.0,  # one clip = one segment of this length
    "frame_size": [1080, 1920],  # H, W of the decoded frames before the encoder's frame size applies
    "queries": 16,
    "warmup": 1,
    "repeats": 1,
    "threads": 0,
    "rerank_hits": 50,  # reranker rows: the cost of re-ranking this many hits
    "gpu_name": "A100 80GB",
    "gpu_tflops": 312.0,  # dense bf16 peak of gpu_name
    "gpu_utilisation": 0.35,  # fraction of the peak assumed reached
    "seed": 0,
}


def check_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` over :data:`DEFAULTS`; unknown keys or row names are a ValueError naming them."""
    cfg = {**DEFAULTS, **(config or {})}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown encoder-family keys {unknown}; known: {sorted(DEFAULTS)}")
    for key in ("measure", "estimate"):
        bad = [r for r in cfg[key] if r not in ROWS]
        if bad:
            raise ValueError(f"{key}: unknown row(s) {bad}; known: {sorted(ROWS)}")
    return cfg


# -- building the encoders with random weights --------------------------------------------------------------
def _qwen_video_processor():
    from transformers import Qwen3VLVideoProcessor

    return Qwen3VLVideoProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 4096, "longest_edge": 25165824}, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5], cap_pixels_per_frame=False, do_sample_frames=False,
    )


def _with_tiny_ids(arch: dict[str, Any], tok) -> dict[str, Any]:
    """``arch`` with the special token ids of the byte-level stand-in tokenizer (speed does not depend on
    the vocabulary; the real vocabulary size is kept)."""
    tm = encoder_bench.tiny_models()
    ids = {t: tok.convert_tokens_to_ids(t) for t in tm.SPECIAL_TOKENS}
    return {**copy.deepcopy(arch), "image_token_id": ids["<|image_pad|>"],
            "video_token_id": ids["<|video_pad|>"], "vision_start_token_id": ids["<|vision_start|>"],
            "vision_end_token_id": ids["<|vision_end|>"]}


def _build(module_fn, device: torch.device, dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return module_fn().eval()
    finally:
        torch.set_default_dtype(old)


def build_encoder(row: str, device: torch.device, dtype: torch.dtype):
    """The encoder (or reranker) of row ``row`` with random weights, built on ``device`` in ``dtype``."""
    spec = ROWS[row]
    family, settings = spec["family"], dict(spec.get("settings") or {})
    tm = encoder_bench.tiny_models()
    if family == "colqwen3":
        cfg = {"max_visual_tokens": 5120, "max_frames": None, "batch_tokens": 16384, "arch_overrides": {},
               **settings}
        return encoder_bench.random_colqwen3(cfg, device, dtype)
    if family in ("qwen3-vl-embedding", "qwen3-vl-reranker"):
        from maxsim.encoders.qwen3vl import LastTokenModel, backbone_config

        tok = tm.build_tokenizer(tm.YES_NO_MERGES)
        config = backbone_config(_with_tiny_ids(QWEN3VL_2B, tok))
        model = _build(lambda: LastTokenModel(config), device, dtype)
        if family == "qwen3-vl-embedding":
            from maxsim.encoders.qwen3vl_embedding import Qwen3VLEmbeddingEncoder, Qwen3VLEmbeddingSettings

            return Qwen3VLEmbeddingEncoder(model, tok, _qwen_video_processor(), f"{row}:random@none",
                                           Qwen3VLEmbeddingSettings(**settings))
        from maxsim.encoders.qwen3vl_reranker import Qwen3VLReranker, Qwen3VLRerankerSettings

        yes_no = torch.randn(2, config.text_config.hidden_size) * 0.02
        return Qwen3VLReranker(model, tok, _qwen_video_processor(), yes_no, f"{row}:random@none",
                               Qwen3VLRerankerSettings(**settings))
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    from maxsim.encoders.clip import ClipFrameEncoder

    if family == "siglip":
        model = _build(lambda: SiglipModel(SiglipConfig(**copy.deepcopy(SIGLIP2_BASE_224))), device, dtype)
        return ClipFrameEncoder(model, SiglipImageProcessor(size={"height": 224, "width": 224}),
                                tm.build_gemma_tokenizer(), f"{row}:random@none", "siglip")
    model = _build(lambda: CLIPModel(CLIPConfig(**copy.deepcopy(CLIP_B32))), device, dtype)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return ClipFrameEncoder(model, processor, tm.build_clip_tokenizer(), f"{row}:random@none", "clip")


# -- FLOPs --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _meta(family: str):
    """The row family's model on the meta device (no weights allocated), for counting."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if family in ("colqwen3",):
            from maxsim.encoders.colqwen3 import ColQwen3Model, backbone_config

            arch = encoder_bench.QWEN3VL_4B
            return ColQwen3Model(backbone_config(arch), arch["embed_dim"])
        if family in ("qwen3-vl-embedding", "qwen3-vl-reranker"):
            from maxsim.encoders.qwen3vl import LastTokenModel, backbone_config

            return LastTokenModel(backbone_config(QWEN3VL_2B))
        from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

        if family == "siglip":
            return SiglipModel(SiglipConfig(**copy.deepcopy(SIGLIP2_BASE_224)))
        return CLIPModel(CLIPConfig(**copy.deepcopy(CLIP_B32)))


def vit_frame_flops(model) -> float:
    """FLOPs of one frame through a CLIP / SigLIP vision tower (and CLIP's projection): 2 x weights x
    tokens for the linear layers, 4 x layers x tokens^2 x width for attention."""
    vcfg = model.config.vision_config
    tokens = (vcfg.image_size // vcfg.patch_size) ** 2 + (1 if model.config.model_type == "clip" else 0)
    vision = model.vision_model
    weights = sum(p.numel() for n, p in vision.named_parameters() if p.ndim == 2 and "embedding" not in n)
    patch = sum(p.numel() for n, p in vision.named_parameters() if "patch_embedding" in n)
    flops = 2 * weights * tokens + 2 * patch * tokens
    flops += 4 * vcfg.num_hidden_layers * tokens * tokens * vcfg.hidden_size
    proj = getattr(model, "visual_projection", None)
    if proj is not None:
        flops += 2 * proj.weight.numel()
    return float(flops)


def row_workload(row: str, enc, cfg: dict[str, Any]) -> dict[str, Any]:
    """What one clip (segment) of row ``row`` costs: frames, tokens, sequence length, FLOPs."""
    spec = ROWS[row]
    family, n = spec["family"], int(spec["frames"])
    h, w = (int(x) for x in cfg["frame_size"])
    size = enc.frame_size(n)
    s = 1.0 if size is None else size.scale(h, w)
    fh, fw = max(1, int(h * s)), max(1, int(w * s))
    if family in ("siglip", "clip"):
        gflops = n * vit_frame_flops(_meta(family)) / 1e9
        return {"frames": n, "tokens": n, "frame_hw": [fh, fw], "gflops": gflops}
    if family == "colqwen3":
        tokens = enc.visual_tokens(n, fh, fw)
        groups = (min(n, enc.frame_cap) + 1) // 2
        seq = tokens + 8 * groups + 20  # markers and vision start/end per pair, the prompt
    else:
        st = enc.settings
        n = min(n, int(st["max_frames"]))
        groups = (n + 1) // 2
        budget = enc.frame_size(n).max_pixels // (32 * 32) * groups
        tokens = enc.video.tokens_for(n, fh, fw, budget)
        seq = tokens + 8 * groups + (80 if family == "qwen3-vl-reranker" else 30)
    flops = encoder_bench.clip_flops(_meta(family), tokens, seq, groups)
    return {"frames": n, "tokens": tokens, "frame_hw": [fh, fw], "gflops": flops / 1e9}


# -- measuring ----------------------------------------------------------------------------------------------
def make_clips(n: int, frames: int, hw: tuple[int, int], seconds: float, seed: int) -> list:
    """``n`` clips of ``frames`` random RGB frames of ``hw`` (already at the encoder's size)."""
    return encoder_bench.make_clips(n, frames, hw, seconds, seed)


def measure_row(row: str, cfg: dict[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Build row ``row`` and time it: clips/s (hits/s for a reranker), queries/s, achieved FLOP/s."""
    t0 = time.perf_counter()
    enc = build_encoder(row, device, dtype)
    load_s = time.perf_counter() - t0
    work = row_workload(row, enc, cfg)
    clips = make_clips(int(cfg["n_clips"]), work["frames"], tuple(work["frame_hw"]),
                       float(cfg["segment_seconds"]), int(cfg["seed"]))
    hits = bool(ROWS[row].get("hits"))
    run = (lambda batch: enc.score("a person opens a red door", batch)) if hits else enc.encode_clips

    with torch.inference_mode():
        for _ in range(int(cfg["warmup"])):
            run(clips[:1])
        synchronize(device)
        times = []
        for _ in range(int(cfg["repeats"])):
            t = time.perf_counter()
            run(clips)
            synchronize(device)
            times.append(time.perf_counter() - t)
        qps = None
        if not hits:
            queries = [f"a person in a red jacket opens door number {i}" for i in range(int(cfg["queries"]))]
            enc.encode_texts(queries[:2])
            t = time.perf_counter()
            enc.encode_texts(queries)
            synchronize(device)
            qps = len(queries) / (time.perf_counter() - t)
    best = statistics.median(times)
    per_s = len(clips) / best
    return {"row": row, **work, "measured": True, "device": str(device), "load_avg_1m": _load_avg(),
            "dtype": str(dtype).replace("torch.", ""), "load_s": load_s, "clips_per_s": per_s,
            "seconds_per_clip": 1.0 / per_s, "queries_per_s": qps,
            "achieved_tflops": work["gflops"] * per_s / 1e3, "times_s": times}


def _load_avg() -> float | None:
    """The 1-minute load average (other processes share the CPU: it shows in the numbers)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def finish_row(r: dict[str, Any], cfg: dict[str, Any], cpu_tflops: dict[str, float]) -> dict[str, Any]:
    """Derived columns: seconds per minute of video (or per ``rerank_hits`` hits), and the GPU estimate."""
    spec = ROWS[r["row"]]
    clips_per_minute = 60.0 / float(cfg["segment_seconds"])
    units = float(cfg["rerank_hits"]) if spec.get("hits") else clips_per_minute
    if r.get("seconds_per_clip") is None and cpu_tflops.get(spec["arch"]):
        r["seconds_per_clip"] = r["gflops"] / 1e3 / cpu_tflops[spec["arch"]]  # FLOPs at the measured rate
    if r.get("seconds_per_clip") is not None:
        r["seconds_per_unit"] = r["seconds_per_clip"] * units
    gpu = float(cfg["gpu_tflops"]) * float(cfg["gpu_utilisation"]) * 1e12
    r["gpu_seconds_per_unit"] = r["gflops"] * 1e9 * units / gpu
    r["unit"] = f"{int(units)} hits" if spec.get("hits") else "video minute"
    r["family"], r["arch"] = spec["family"], spec["arch"]
    return r


def run_rows(cfg: dict[str, Any], on_row=None) -> list[dict[str, Any]]:
    """Measure then estimate the configured rows; ``on_row(row)`` is called as each is finished."""
    from maxsim.encoders.checkpoint import resolve_cpu_dtype

    device = resolve_device(cfg["device"])
    dtype = resolve_cpu_dtype(cfg["dtype"], device)
    rows, rate = [], {}
    for name in cfg["measure"]:
        r = measure_row(name, cfg, device, resolve_cpu_dtype(ROWS[name].get("dtype", dtype), device))
        gc.collect()  # the row's model goes before the next one is built
        if device.type == "cpu" and "dtype" not in ROWS[name]:
            rate.setdefault(ROWS[name]["arch"], r["achieved_tflops"])
        rows.append(finish_row(r, cfg, rate))
        if on_row:
            on_row(rows[-1])
    for name in cfg["estimate"]:
        enc = _estimate_encoder(name)
        r = {"row": name, **row_workload(name, enc, cfg), "measured": False}
        rows.append(finish_row(r, cfg, rate))
        if on_row:
            on_row(rows[-1])
    return rows


def _estimate_encoder(row: str):
    """A stand-in with the row's settings for counting tokens only (tiny weights, real processors)."""
    spec = ROWS[row]
    tm = encoder_bench.tiny_models()
    family, settings = spec["family"], dict(spec.get("settings") or {})
    tok = tm.build_tokenizer(tm.YES_NO_MERGES)
    if family == "colqwen3":
        from maxsim.encoders.colqwen3 import ColQwen3Encoder, ColQwen3Model, ColQwen3Settings, backbone_config

        cfg = json.loads(json.dumps(tm.colqwen3_config_dict(tok)))
        model = ColQwen3Model(backbone_config(cfg), cfg["embed_dim"])
        return ColQwen3Encoder(model, tok, _qwen_video_processor(), "count", ColQwen3Settings(**settings))
    if family in ("qwen3-vl-embedding", "qwen3-vl-reranker"):
        from maxsim.encoders.qwen3vl import LastTokenModel, backbone_config
        from maxsim.encoders.qwen3vl_embedding import Qwen3VLEmbeddingEncoder, Qwen3VLEmbeddingSettings

        model = LastTokenModel(backbone_config(tm.qwen3vl_config_dict(tok)))
        keep = {k: v for k, v in settings.items() if k in Qwen3VLEmbeddingSettings.__dataclass_fields__}
        return Qwen3VLEmbeddingEncoder(model, tok, _qwen_video_processor(), "count",
                                       Qwen3VLEmbeddingSettings(**keep))
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    from maxsim.encoders.clip import ClipFrameEncoder

    if family == "siglip":
        processor = SiglipImageProcessor(size={"height": 224, "width": 224})
    else:
        processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return ClipFrameEncoder(_meta(family), processor, None, "count", family)
