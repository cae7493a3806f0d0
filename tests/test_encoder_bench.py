"""The encoder benchmark script on the tiny model (CPU), and its FLOP model of the 4B architecture."""

import json

import pytest
from maxsim.bench import encoder_bench


def test_encoder_bench_tiny(tmp_path):
    res = encoder_bench.run(
        {"n_clips": 3, "frames_per_clip": 4, "frame_size": [64, 96], "repeats": 1, "warmup": 0, "queries": 4},
        tmp_path,
    )
    assert res["visual_tokens_per_clip"] == {"mean": 12.0, "min": 12, "max": 12}  # 2 pairs x (2 x 3)
    assert res["clips_per_s"] > 0 and res["queries_per_s"] > 0
    assert res["seconds_per_video_minute"] == pytest.approx(60 / (res["clips_per_s"] * 4.0))
    assert res["gflops_per_clip_4b"] > 1000 * res["gflops_per_clip"]
    assert json.loads((tmp_path / "encoder_bench.json").read_text())["encoder"] == res["encoder"]
    with pytest.raises(ValueError, match="unknown encoder-bench keys"):
        encoder_bench.run({"n_clip": 3}, tmp_path)


def test_4b_architecture_size_and_flops():
    from accelerate import init_empty_weights

    from maxsim.encoders.colqwen3 import ColQwen3Model, backbone_config

    arch = encoder_bench.QWEN3VL_4B
    with init_empty_weights():
        model = ColQwen3Model(backbone_config(arch), arch["embed_dim"])
    n = sum(p.numel() for p in model.parameters())
    assert 4.2e9 < n < 4.7e9  # Qwen3-VL-4B (untied embeddings counted once) + the 320-d head
    # Linear-layer FLOPs dominate: about 2 x non-embedding parameters per token.
    f = encoder_bench.clip_flops(model, visual_tokens=256, seq_len=300, n_groups=2)
    lm = sum(p.numel() for p in model.vlm.language_model.parameters())
    lm -= model.vlm.language_model.embed_tokens.weight.numel()
    assert 2 * lm * 300 < f < 2 * lm * 300 * 1.6
