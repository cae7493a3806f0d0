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


# -- every family (bench/encoder_families.py): FLOP model and the measuring path on a tiny model -------------
def test_family_rows_from_flops():
    from maxsim.bench import encoder_cmd
    from maxsim.bench import encoder_families as ef

    cfg = ef.check_config({"measure": [], "estimate": list(ef.ROWS)})
    rows = {r["row"]: r for r in ef.run_rows(cfg)}
    assert set(rows) == set(ef.ROWS) and not any(r["measured"] for r in rows.values())
    assert 30 < rows["siglip2-base"]["gflops"] / 16 < 45  # ViT-B/16 at 224 px: ~17.5 GMAC, 35 GFLOP
    assert 7.5 < rows["clip-b32"]["gflops"] / 16 < 10  # ViT-B/32: ~4.4 GMAC, 8.8 GFLOP
    assert rows["siglip2-base"]["frame_hw"] == [224, 398]  # 1080p scaled to the processor's 224
    assert 0.9 * 5120 <= rows["colqwen3-4b"]["tokens"] <= 5120  # 1080p sized to the encoder fills it
    assert rows["colqwen3-4b"]["tokens"] > 5 * rows["colqwen3-4b-cpu"]["tokens"]
    assert rows["qwen3-vl-embedding-2b"]["tokens"] <= 8 * 768  # per-pair cap
    assert 10 < rows["colqwen3-4b-cpu"]["gflops"] / rows["clip-b32"]["gflops"] < 50  # "10-50x"
    r = rows["siglip2-base"]
    assert r["gpu_seconds_per_unit"] == pytest.approx(r["gflops"] * 1e9 * 6 / (312e12 * 0.35))
    assert rows["qwen3-vl-reranker-2b"]["unit"] == "50 hits" and r["unit"] == "video minute"
    (table,) = encoder_cmd.tables({"families": list(rows.values()), "families_setup": {"gpu_name": "A100"}})
    assert len(table.rows) == len(ef.ROWS) and "estimate" in table.note
    with pytest.raises(ValueError, match="unknown row"):
        ef.check_config({"measure": ["nope"]})


def test_family_measuring_path_on_a_tiny_model(monkeypatch, tiny_frame_model_dirs):
    from maxsim.bench import encoder_families as ef

    from maxsim.encoders import load_encoder

    enc = load_encoder(str(tiny_frame_model_dirs["siglip"]), device="cpu", dtype="float32")
    monkeypatch.setattr(ef, "build_encoder", lambda row, device, dtype: enc)
    cfg = ef.check_config({"measure": ["siglip2-base"], "estimate": ["clip-b32"], "device": "cpu",
                           "n_clips": 2, "queries": 2, "warmup": 0, "frame_size": [64, 96]})
    measured, estimated = ef.run_rows(cfg)
    assert measured["measured"] and measured["frame_hw"] == [32, 48] and measured["clips_per_s"] > 0
    assert measured["seconds_per_unit"] == pytest.approx(6 / measured["clips_per_s"])  # 10 s segments
    assert measured["queries_per_s"] > 0 and len(measured["times_s"]) == 1
    assert "seconds_per_unit" not in estimated  # another architecture: no measured rate to scale
