"""Encoder throughput: clips/s, visual tokens per clip, query throughput and memory of the ColQwen3 encoder.

``run(config, out_dir) -> dict`` times ``encode_clips`` on synthetic decoded clips (random frames of a given
size, so decoding is not part of the number) and ``encode_texts`` on short queries. The model is one of:

- ``"tiny"``: the tiny random ColQwen3 of the test suite, saved and loaded through the production loader
  (CPU smoke numbers: the cost of pre-processing and batching more than of the network);
- ``"4b-random"``: the full Qwen3-VL-4B + 320-d projection architecture of TomoroAI/tomoro-colqwen3-embed-4b
  with random bf16 weights, built directly on the device (GPU numbers without downloading the weights;
  ``arch_overrides`` can shrink it, e.g. ``{"text.num_hidden_layers": 2}``, for a CPU check);
- a local checkpoint folder or hub id, loaded with ``ColQwen3Encoder.from_pretrained``.

Besides measured times the result carries an analytic FLOP count per clip (linear layers and attention of the
vision tower and the language model), so a CPU measurement of one model can be turned into an estimate for
another: ``seconds ~= FLOPs / achieved FLOP/s``. Run it as ``maxsim-bench encoder`` (presets in
``configs/bench/encoder.toml``, a sweep over token budgets: :mod:`maxsim.bench.encoder_cmd`).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from maxsim.bench.timing import resolve_device, synchronize

DEFAULTS: dict[str, Any] = {
    "model": "tiny",  # "tiny" | "4b-random" | folder | hub id
    "device": "auto",
    "dtype": None,  # default: bfloat16 on a GPU, float32 on the CPU
    "n_clips": 16,
    "frames_per_clip": 8,
    "frame_size": [360, 640],  # H, W of the decoded frames
    "clip_seconds": 4.0,  # span of one clip (for "seconds of video per second")
    "max_visual_tokens": 5120,
    "max_frames": None,
    "batch_tokens": 16384,
    "queries": 64,
    "warmup": 1,
    "repeats": 3,
    "threads": 0,  # torch CPU threads; 0 = leave as is
    "seed": 0,
    "arch_overrides": {},  # for "4b-random": {"text.num_hidden_layers": 2, "vision.depth": 2, ...}
}

# Architecture of TomoroAI/tomoro-colqwen3-embed-4b (Qwen3-VL-4B backbone), as its config.json gives it.
QWEN3VL_4B = {
    "embed_dim": 320,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "text_config": {
        "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "rope_theta": 5000000,
    },
    "vision_config": {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "in_channels": 3,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2560,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
        "hidden_act": "gelu_pytorch_tanh",
    },
}


def tiny_models():
    """The test suite's tiny-checkpoint builder (tests/tiny_models.py next to this folder)."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    if not (tests / "tiny_models.py").is_file():
        raise FileNotFoundError(f"model 'tiny' needs {tests / 'tiny_models.py'} (a source checkout)")
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    import tiny_models

    return tiny_models


def random_colqwen3(cfg: dict[str, Any], device: torch.device, dtype: torch.dtype):
    """A ColQwen3 encoder of the 4B architecture (``cfg['arch_overrides']`` applied) with random weights
    built on ``device`` in ``dtype``, with the settings of ``cfg`` (max_visual_tokens, max_frames,
    batch_tokens)."""
    from transformers import Qwen3VLVideoProcessor

    from maxsim.encoders.colqwen3 import ColQwen3Encoder, ColQwen3Model, ColQwen3Settings, backbone_config

    arch = json.loads(json.dumps(QWEN3VL_4B))
    for key, value in (cfg.get("arch_overrides") or {}).items():
        part, _, field = key.partition(".")
        section = {"text": "text_config", "vision": "vision_config"}.get(part)
        if section is None or field not in arch[section]:
            raise ValueError(
                f"arch_overrides key {key!r}: expected text.<field> or vision.<field> of QWEN3VL_4B"
            )
        arch[section][field] = value
    tm = tiny_models()
    tok = tm.build_tokenizer()  # byte-level stand-in: throughput does not depend on the vocabulary
    ids = {t: tok.convert_tokens_to_ids(t) for t in tm.SPECIAL_TOKENS}
    arch.update(
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config = backbone_config(arch)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = ColQwen3Model(config, arch["embed_dim"]).eval()
    finally:
        torch.set_default_dtype(old)
    vp = Qwen3VLVideoProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 4096, "longest_edge": 25165824},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], cap_pixels_per_frame=False,
        do_sample_frames=False,
    )
    settings = ColQwen3Settings(
        max_visual_tokens=int(cfg["max_visual_tokens"]), max_frames=cfg["max_frames"],
        batch_tokens=int(cfg["batch_tokens"]),
    )
    return ColQwen3Encoder(model, tok, vp, name="colqwen3:random-4b-architecture@none", settings=settings)


def load_bench_encoder(cfg: dict[str, Any], work: Path):
    """The encoder named by ``cfg['model']`` (see the module docstring)."""
    from maxsim.encoders.checkpoint import resolve_dtype
    from maxsim.encoders.colqwen3 import ColQwen3Encoder

    device = resolve_device(cfg["device"])
    dtype = resolve_dtype(cfg["dtype"], device)
    model = cfg["model"]
    if model == "4b-random":
        return random_colqwen3(cfg, device, dtype)
    if model == "tiny":
        model = str(tiny_models().build_tiny_colqwen3(work / "tiny-colqwen3"))
    return ColQwen3Encoder.from_pretrained(
        model, device=device, dtype=dtype, max_visual_tokens=int(cfg["max_visual_tokens"]),
        max_frames=cfg["max_frames"], batch_tokens=int(cfg["batch_tokens"]),
    )


def make_clips(n: int, frames: int, size: tuple[int, int], seconds: float, seed: int) -> list:
    """``n`` clips of ``frames`` random RGB frames each (smooth colour fields plus noise)."""
    from maxsim.types import Clip

    rng = np.random.default_rng(seed)
    h, w = size
    clips = []
    for i in range(n):
        base = rng.integers(0, 256, (1, 1, 1, 3))
        noise = rng.integers(-40, 40, (frames, h, w, 3))
        fr = np.clip(base + noise, 0, 255).astype(np.uint8)
        start = i * seconds
        times = start + (np.arange(frames) + 0.5) * seconds / frames
        clips.append(Clip(f"bench-{i}.mp4", start, start + seconds, fr, times))
    return clips


def clip_flops(model, visual_tokens: int, seq_len: int, n_groups: int) -> float:
    """Analytic FLOPs of one clip's forward pass through ``model`` (a ColQwen3Model, or any module holding a
    Qwen3-VL model as ``vlm`` such as the Qwen3-VL-Embedding one; possibly on the meta device): 2 x
    multiply-adds of every weight matrix for the inputs it sees (patches for the vision blocks, merged
    tokens for the mergers, the whole prompt for the language model), plus attention (vision attention
    within each frame pair, causal attention over the prompt)."""
    cfg = model.config
    vcfg, tcfg = cfg.vision_config, cfg.text_config
    vis = model.vlm.visual

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    mergers = count(vis.merger) + sum(count(m) for m in getattr(vis, "deepstack_merger_list", []))
    per_patch = count(vis.blocks) + count(vis.patch_embed)
    patches = visual_tokens * vcfg.spatial_merge_size**2
    per_group = patches / max(n_groups, 1)
    vision = 2 * per_patch * patches + 2 * mergers * visual_tokens
    vision += 4 * vcfg.depth * patches * per_group * vcfg.hidden_size
    lm = model.vlm.language_model
    lm_params = count(lm) - lm.embed_tokens.weight.numel()
    attn_width = tcfg.num_attention_heads * tcfg.head_dim
    text = 2 * lm_params * seq_len + 2 * tcfg.num_hidden_layers * seq_len * seq_len * attn_width
    head = getattr(model, "embedding_proj_layer", None)
    proj = 2 * count(head) * seq_len if head is not None else 0
    return float(vision + text + proj)


@functools.lru_cache(maxsize=4)
def _meta_model(arch_json: str):
    """A ColQwen3Model of the architecture ``arch_json`` on the meta device (no weights allocated)."""
    from accelerate import init_empty_weights

    from maxsim.encoders.colqwen3 import ColQwen3Model, backbone_config

    arch = json.loads(arch_json)
    with init_empty_weights():
        return ColQwen3Model(backbone_config(arch), arch["embed_dim"])


def architecture_flops(visual_tokens: int, seq_len: int, n_groups: int, arch: dict | None = None) -> float:
    """:func:`clip_flops` for an architecture (default: the 4B) without allocating its weights."""
    model = _meta_model(json.dumps(arch or QWEN3VL_4B, sort_keys=True))
    return clip_flops(model, visual_tokens, seq_len, n_groups)


def check_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """``config`` over :data:`DEFAULTS`; a key that is not one of them is a ValueError naming it."""
    cfg = {**DEFAULTS, **(config or {})}
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown encoder-bench keys {unknown}; known: {sorted(DEFAULTS)}")
    return cfg


def measure(enc, cfg: dict[str, Any]) -> dict[str, Any]:
    """Time ``enc`` (a loaded ColQwen3Encoder) on the synthetic clips and queries that ``cfg`` describes
    (a full config, see :func:`check_config`); the record :func:`run` returns, without ``load_s``."""
    device = enc.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    h, w = (int(x) for x in cfg["frame_size"])
    clips = make_clips(
        int(cfg["n_clips"]), int(cfg["frames_per_clip"]), (h, w), float(cfg["clip_seconds"]), int(cfg["seed"])
    )
    prepared = [enc.prepare(c) for c in clips]
    vis = [int(p["grid"].prod()) // (enc.merge * enc.merge) for p in prepared]
    seq = [len(p["ids"]) for p in prepared]
    groups = [int(p["grid"][0]) for p in prepared]
    for _ in range(int(cfg["warmup"])):
        enc.encode_clips(clips[: max(1, len(clips) // 4)])
    synchronize(device)
    clip_times = []
    for _ in range(int(cfg["repeats"])):
        t = time.perf_counter()
        got = enc.encode_clips(clips)
        synchronize(device)
        clip_times.append(time.perf_counter() - t)
    if [len(g) for g in got] != vis:
        raise RuntimeError("encoded token counts differ from the prepared ones")
    t = time.perf_counter()
    for c in clips:
        enc.prepare(c)
    prep_s = (time.perf_counter() - t) / len(clips)
    queries = [f"a person in a red jacket opens door number {i}" for i in range(int(cfg["queries"]))]
    enc.encode_texts(queries[:4])
    synchronize(device)
    t = time.perf_counter()
    enc.encode_texts(queries)
    synchronize(device)
    query_s = time.perf_counter() - t
    best = statistics.median(clip_times)
    clips_per_s = len(clips) / best
    flops = [clip_flops(enc.model, v, s, g) for v, s, g in zip(vis, seq, groups, strict=True)]
    flops_4b = [architecture_flops(v, s, g) for v, s, g in zip(vis, seq, groups, strict=True)]
    result: dict[str, Any] = {
        "config": cfg,
        "encoder": enc.name,
        "settings": enc.settings,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "visual_tokens_per_clip": {"mean": float(np.mean(vis)), "min": min(vis), "max": max(vis)},
        "sequence_tokens_per_clip": float(np.mean(seq)),
        "clips_per_s": clips_per_s,
        "clip_times_s": clip_times,
        "preprocess_s_per_clip": prep_s,
        "video_seconds_per_s": clips_per_s * float(cfg["clip_seconds"]),
        "seconds_per_video_minute": 60.0 / (clips_per_s * float(cfg["clip_seconds"])),
        "queries_per_s": len(queries) / query_s,
        "gflops_per_clip": float(np.mean(flops)) / 1e9,
        "achieved_tflops": float(np.sum(flops)) / best / 1e12,
        # The same clips through the 4B architecture, for estimates: seconds ~ FLOPs / achieved FLOP/s.
        "gflops_per_clip_4b": float(np.mean(flops_4b)) / 1e9,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def run(config: dict[str, Any] | None, out_dir: str | Path) -> dict[str, Any]:
    """Measure the encoder described by ``config`` (keys of :data:`DEFAULTS`); write ``encoder_bench.json``
    into ``out_dir`` and return the same record."""
    cfg = check_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int(cfg["threads"]) > 0:
        torch.set_num_threads(int(cfg["threads"]))
    with tempfile.TemporaryDirectory(prefix="encoder-bench-") as tmp:
        t0 = time.perf_counter()
        enc = load_bench_encoder(cfg, Path(tmp))
        load_s = time.perf_counter() - t0
        result = measure(enc, cfg)
    result["load_s"] = round(load_s, 3)
    (out / "encoder_bench.json").write_text(json.dumps(result, indent=2, default=str))
    return result
