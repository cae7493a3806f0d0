"""ColQwen3 / ColQwen2 encoders on tiny random checkpoints, loaded through the production loaders offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxsim.encoders import load_encoder
from maxsim.encoders.checkpoint import MissingWeightsError, fingerprint
from maxsim.encoders.colqwen2 import ColQwen2Encoder
from maxsim.encoders.colqwen3 import (
    IGNORED_KEYS,
    CheckpointKeyError,
    ColQwen3Encoder,
    map_checkpoint_keys,
)
from maxsim.types import Clip

DIM = 32  # embed_dim of the tiny checkpoints


def make_clip(n: int, h: int = 64, w: int = 96, start: float = 3.0, seed: int = 0, step: float = 0.5) -> Clip:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    times = start + step * np.arange(n)
    return Clip("video.mp4", start, start + step * n, frames, times)


def assert_unit_rows(t: torch.Tensor) -> None:
    assert t.dtype == torch.float32 and t.ndim == 2 and t.shape[1] == DIM
    assert torch.isfinite(t).all()
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(len(t)), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- ColQwen3
def test_loaded_by_production_loader(tiny_colqwen3, tiny_colqwen3_dir):
    enc = tiny_colqwen3
    assert enc.dim == DIM
    assert enc.name.startswith(f"colqwen3:{tiny_colqwen3_dir.name}@sha256-")
    assert enc.name.endswith(fingerprint(tiny_colqwen3_dir))
    s = enc.settings
    assert s["max_visual_tokens"] == 5120 and s["dtype"] == "float32" and s["query_augmentation"] == 10
    json.dumps(s)  # recordable in the index


def test_text_shapes_norms_and_augmentation(tiny_colqwen3):
    enc = tiny_colqwen3
    texts = ["a red scene", "a much longer query about a blue car driving at night", ""]
    out = enc.encode_texts(texts)
    assert len(out) == 3
    for text, t in zip(texts, out, strict=True):
        n_text = len(enc.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert t.shape == (n_text + 10, DIM)  # every text token + 10 augmentation tokens, no padding rows
        assert_unit_rows(t)
    # Left padding: a query encodes the same alone and next to longer ones.
    alone = enc.encode_texts(["a red scene"])[0]
    torch.testing.assert_close(alone, out[0], atol=1e-5, rtol=0)


def test_text_batches_split(tiny_colqwen3):
    small = tiny_colqwen3.with_settings(text_batch_size=2)
    texts = [f"query number {i}" for i in range(5)]
    for a, b in zip(small.encode_texts(texts), tiny_colqwen3.encode_texts(texts), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_clip_shapes_norms_and_token_count(tiny_colqwen3):
    enc = tiny_colqwen3
    clip = make_clip(8, 64, 96)
    (out,) = enc.encode_clips([clip])
    # 64x96 frames -> 2x3 merged patches per frame pair; 8 frames -> 4 pairs.
    assert out.shape == (4 * 6, DIM) == (enc.visual_tokens(8, 64, 96), DIM)
    assert_unit_rows(out)


def test_prompt_matches_published_video_format(tiny_colqwen3):
    enc = tiny_colqwen3
    clip = make_clip(4, 64, 96, start=10.0)
    prep = enc.prepare(clip)
    pads = "<|video_pad|>" * 6
    text = (
        "<|im_start|>user\n"
        f"<0.2 seconds><|vision_start|>{pads}<|vision_end|><1.2 seconds><|vision_start|>{pads}<|vision_end|>"
        "Describe the video.<|im_end|><|endoftext|>"
    )
    assert prep["ids"] == enc.tokenizer(text, add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(prep["token_times"], [10.25] * 6 + [11.25] * 6)


def test_same_features_and_markers_as_native_processor(tiny_colqwen3):
    """Our frames + metadata through transformers' own Qwen3VLProcessor give the same pixels, grid and
    timestamp markers as the encoder's preparation."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor

    enc = tiny_colqwen3
    clip = make_clip(6, 80, 120, start=7.0, step=0.4)
    prep = enc.prepare(clip)
    native = Qwen3VLProcessor(
        tokenizer=enc.tokenizer, video_processor=enc.video_processor, image_processor=Qwen2VLImageProcessor()
    )
    out = native(
        text=["<|video_pad|>"], videos=[prep["frames"]], video_metadata=[prep["metadata"]],
        do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="pt",
        size={"shortest_edge": enc.min_pixels, "longest_edge": enc.max_pixels},
    )
    torch.testing.assert_close(out["pixel_values_videos"], prep["pixels"])
    assert out["video_grid_thw"][0].tolist() == prep["grid"].tolist()
    text = enc.tokenizer.decode(out["input_ids"][0])
    assert [m for m in text.split("<") if "seconds>" in m] == ["0.2 seconds>", "1.0 seconds>", "1.8 seconds>"]
    mine = enc.tokenizer.decode(prep["ids"])
    assert [m for m in mine.split("<") if "seconds>" in m] == ["0.2 seconds>", "1.0 seconds>", "1.8 seconds>"]


def test_alone_equals_in_batch(tiny_colqwen3):
    clips = [make_clip(6, 64, 96, seed=1), make_clip(3, 96, 128, seed=2), make_clip(2, 64, 64, seed=3)]
    batched = tiny_colqwen3.encode_clips(clips)
    # A small token budget splits the clips over several forward passes; order must be kept.
    split = tiny_colqwen3.with_settings(batch_tokens=150).encode_clips(clips)
    for clip, b, s in zip(clips, batched, split, strict=True):
        (alone,) = tiny_colqwen3.encode_clips([clip])
        assert alone.shape == b.shape == s.shape
        torch.testing.assert_close(alone, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(alone, s, atol=1e-5, rtol=0)
    assert not torch.allclose(batched[0][: len(batched[2])], batched[2])


def test_visual_tokens_follow_budget(tiny_colqwen3):
    clip = make_clip(8, 256, 384)
    counts = {}
    for budget in (8, 32, 96, 5120):
        enc = tiny_colqwen3.with_settings(max_visual_tokens=budget)
        (out,) = enc.encode_clips([clip])
        assert len(out) == enc.visual_tokens(8, 256, 384)
        assert len(out) <= budget
        counts[budget] = len(out)
        assert_unit_rows(out)
    assert counts[8] < counts[32] < counts[96] < counts[5120]
    assert counts[5120] == 4 * (256 // 32) * (384 // 32)  # under a large budget: native resolution


def test_frames_are_capped_by_max_frames(tiny_colqwen3):
    enc = tiny_colqwen3.with_settings(max_frames=4)
    vecs, times = enc.encode_clips_timed([make_clip(20, 32, 32, start=0.0)])[0]
    assert len(vecs) == 2  # 4 frames -> 2 pairs of 1 token
    assert times[0] < times[1]


def test_one_frame_clip(tiny_colqwen3):
    clip = make_clip(1, 64, 96, start=5.0)
    vecs, times = tiny_colqwen3.encode_clips_timed([clip])[0]
    assert vecs.shape == (6, DIM)
    assert_unit_rows(vecs)
    np.testing.assert_allclose(times, 5.0)
    # The same as the frame shown twice.
    still = Clip("video.mp4", 5.0, 5.5, np.repeat(clip.frames, 2, axis=0), np.array([5.0, 5.0]))
    torch.testing.assert_close(vecs, tiny_colqwen3.encode_clips([still])[0], atol=1e-5, rtol=0)


def test_odd_frame_count_and_token_times(tiny_colqwen3):
    clip = make_clip(5, 32, 32, start=2.0)
    vecs, times = tiny_colqwen3.encode_clips_timed([clip])[0]
    assert len(vecs) == len(times) == 3  # 5 frames -> 3 pairs (last frame repeated), 1 token each
    np.testing.assert_allclose(times, [2.25, 3.25, 4.0])
    assert np.all(np.diff(times) >= 0) and clip.start <= times.min() and times.max() <= clip.end


def test_timestamps_relative_to_clip_start(tiny_colqwen3):
    a, b = make_clip(4, start=0.0, seed=7), make_clip(4, start=42.0, seed=7)
    ea, eb = tiny_colqwen3.encode_clips([a, b])
    torch.testing.assert_close(ea, eb, atol=1e-5, rtol=0)  # same content, same vectors
    absolute = tiny_colqwen3.with_settings(absolute_timestamps=True)
    fa, fb = absolute.encode_clips([a, b])
    torch.testing.assert_close(fa, ea, atol=1e-5, rtol=0)  # a starts at 0: same markers either way
    assert not torch.allclose(fb, eb, atol=1e-4)  # the markers now say 42 s: the context changes


def test_matches_native_qwen3vl_reference(tiny_colqwen3, tiny_colqwen3_dir):
    """Our model equals transformers' Qwen3VLForConditionalGeneration holding the same checkpoint."""
    from safetensors.torch import load_file
    from transformers import Qwen3VLForConditionalGeneration

    enc = tiny_colqwen3
    sd = {}
    for f in sorted(tiny_colqwen3_dir.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    ref = Qwen3VLForConditionalGeneration(enc.model.config).eval()
    ref.load_state_dict({k[len("vlm."):]: v for k, v in sd.items() if k.startswith("vlm.")}, strict=True)
    clip = make_clip(4, 64, 96)
    prep = enc.prepare(clip)
    ids = torch.tensor([prep["ids"]])
    with torch.inference_mode():
        hidden = ref.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values_videos=prep["pixels"],
            video_grid_thw=prep["grid"][None],
            mm_token_type_ids=(ids == enc.video_token_id).long() * 2,
        ).last_hidden_state[0]
    emb = hidden @ sd["embedding_proj_layer.weight"].T + sd["embedding_proj_layer.bias"]
    emb = torch.nn.functional.normalize(emb, dim=-1)[ids[0] == enc.video_token_id]
    torch.testing.assert_close(enc.encode_clips([clip])[0], emb, atol=1e-5, rtol=0)


def test_bfloat16_on_cpu(tiny_colqwen3_dir):
    enc = ColQwen3Encoder.from_pretrained(str(tiny_colqwen3_dir), device="cpu", dtype="bfloat16")
    assert enc.settings["dtype"] == "bfloat16"
    (out,) = enc.encode_clips([make_clip(2)])
    assert out.dtype == torch.float32
    assert_unit_rows(out)


def test_bad_frames_are_refused(tiny_colqwen3):
    clip = make_clip(2)
    with pytest.raises(ValueError, match="uint8"):
        tiny_colqwen3.encode_clips([Clip("v.mp4", 0, 1, clip.frames.astype(np.float32), clip.timestamps)])
    with pytest.raises(ValueError, match="timestamps"):
        tiny_colqwen3.encode_clips([Clip("v.mp4", 0, 1, clip.frames, clip.timestamps[:1])])


# --------------------------------------------------------------------------------------------- key map
def test_key_map_unit():
    model_keys = ["vlm.visual.a", "vlm.language_model.b", "embedding_proj_layer.weight"]
    ckpt = ["vlm.model.visual.a", "vlm.model.language_model.b", "embedding_proj_layer.weight", *IGNORED_KEYS]
    assert map_checkpoint_keys(ckpt, model_keys) == {
        "vlm.model.visual.a": "vlm.visual.a",
        "vlm.model.language_model.b": "vlm.language_model.b",
        "embedding_proj_layer.weight": "embedding_proj_layer.weight",
    }
    with pytest.raises(CheckpointKeyError, match=r"missing from the checkpoint: vlm\.language_model\.b"):
        map_checkpoint_keys(ckpt[:1] + ckpt[2:], model_keys)
    with pytest.raises(CheckpointKeyError, match=r"unexpected in the checkpoint: vlm\.model\.visual\.zz"):
        map_checkpoint_keys([*ckpt, "vlm.model.visual.zz"], model_keys)
    with pytest.raises(CheckpointKeyError, match=r"unexpected in the checkpoint: model\.visual\.a"):
        map_checkpoint_keys(["model.visual.a", *ckpt[1:]], model_keys)


def _broken(tmp_path, edit):
    from tests.tiny_models import build_tiny_colqwen3

    return build_tiny_colqwen3(tmp_path / "ckpt", shards=1, state_dict_edit=edit)


def test_refuses_checkpoint_with_missing_key(tmp_path):
    folder = _broken(tmp_path, lambda sd: sd.pop("vlm.model.language_model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(CheckpointKeyError, match=r"missing .*vlm\.language_model\.layers\.1\.mlp\.down_proj"):
        ColQwen3Encoder.from_pretrained(str(folder), device="cpu")


def test_refuses_checkpoint_with_unexpected_key(tmp_path, tiny_colqwen3_dir):
    folder = _broken(tmp_path, lambda sd: sd.update({"vlm.model.visual.extra.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointKeyError, match=r"unexpected .*vlm\.model\.visual\.extra\.weight"):
        ColQwen3Encoder.from_pretrained(str(folder), device="cpu")
    assert fingerprint(folder) != fingerprint(tiny_colqwen3_dir)


def test_refuses_checkpoint_with_wrong_shape(tmp_path):
    def edit(sd):
        sd["embedding_proj_layer.weight"] = torch.zeros(16, 64)
        sd["embedding_proj_layer.bias"] = torch.zeros(16)

    with pytest.raises(CheckpointKeyError, match=r"embedding_proj_layer\.(weight|bias) has shape \(16"):
        ColQwen3Encoder.from_pretrained(str(_broken(tmp_path, edit)), device="cpu")


# ------------------------------------------------------------------------------------- registry, offline
def test_load_encoder_by_name_and_folder(tiny_colqwen3_dir, tiny_colqwen2_dir):
    import maxsim.encoders as encoders

    assert encoders.DEFAULT_ENCODER == "colqwen3"
    by_name = load_encoder("colqwen3", id_or_path=str(tiny_colqwen3_dir), device="cpu")
    by_folder = load_encoder(str(tiny_colqwen3_dir), device="cpu", max_visual_tokens=64)
    assert isinstance(by_name, ColQwen3Encoder) and isinstance(by_folder, ColQwen3Encoder)
    assert by_name.name == by_folder.name and by_folder.settings["max_visual_tokens"] == 64
    cpu = load_encoder("colqwen3-cpu", id_or_path=str(tiny_colqwen3_dir))
    assert cpu.name == by_name.name  # same checkpoint, same embedding space: indexes stay compatible
    assert cpu.settings["max_visual_tokens"] == 256 and cpu.settings["max_frames"] == 4
    assert isinstance(load_encoder(str(tiny_colqwen2_dir), device="cpu"), ColQwen2Encoder)
    assert isinstance(load_encoder("colqwen2", id_or_path=str(tiny_colqwen2_dir)), ColQwen2Encoder)


def test_missing_weights_offline_names_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as err:
        ColQwen3Encoder.from_pretrained("TomoroAI/tomoro-colqwen3-embed-4b", cache_dir=str(tmp_path))
    msg = str(err.value)
    assert "hf download TomoroAI/tomoro-colqwen3-embed-4b" in msg
    assert "HF_HUB_OFFLINE is set" in msg and "local folder" in msg
    with pytest.raises(MissingWeightsError, match="neither an existing local folder"):
        ColQwen3Encoder.from_pretrained(str(tmp_path / "no-such-folder"))


def test_importing_maxsim_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, maxsim, maxsim.encoders; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- ColQwen2
def test_colqwen2_clips_and_texts(tiny_colqwen2, tiny_colqwen2_dir):
    enc = tiny_colqwen2
    assert not enc.model.use_kernels  # Hub kernels stay off: loads run installed code only
    assert enc.dim == DIM and enc.name.startswith(f"colqwen2:{tiny_colqwen2_dir.name}@sha256-")
    clips = [make_clip(3, 56, 84, seed=1), make_clip(1, 112, 112, seed=2)]
    timed = enc.encode_clips_timed(clips)
    (v0, t0), (v1, t1) = timed
    assert v0.shape == (3 * 6, DIM)  # 56x84 -> 2x3 merged patches per frame, 3 frames
    assert v1.shape == (16, DIM)  # 112x112 -> 4x4
    np.testing.assert_allclose(t0, np.repeat(clips[0].timestamps, 6))
    for v in (v0, v1):
        assert_unit_rows(v)
    for clip, (v, _) in zip(clips, timed, strict=True):
        torch.testing.assert_close(enc.encode_clips([clip])[0], v, atol=1e-5, rtol=0)
    # The frames of a clip are encoded as independent images: a clip is its frames, in order.
    f1 = enc.encode_clips([Clip("v", 0, 1, clips[0].frames[1:2], clips[0].timestamps[1:2])])[0]
    torch.testing.assert_close(f1, v0[6:12], atol=1e-5, rtol=0)
    q = enc.encode_texts(["a red scene", "another query"])
    assert all(t.shape[1] == DIM and len(t) > 10 for t in q)
    for t in q:
        assert_unit_rows(t)


def test_colqwen2_budget_is_split_over_frames(tiny_colqwen2):
    clip = make_clip(4, 224, 224)
    full = tiny_colqwen2.encode_clips([clip])[0]
    assert len(full) == 4 * 64  # the tiny processor's per-image limit is 64 tokens
    small = tiny_colqwen2.with_settings(max_visual_tokens=40).encode_clips([clip])[0]
    assert len(small) <= 40 and len(small) % 4 == 0 and len(small) > 0
    assert_unit_rows(small)


def test_prompts_from_processor_config(tmp_path, tiny_colqwen3_dir, tiny_colqwen3):
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_colqwen3_dir, folder)
    (folder / "processor_config.json").write_text(json.dumps({
        "processor_class": "ColQwen3Processor",
        "query_prefix": "Query: ",
        "video_prompt_prefix": "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "Find the moment.",
    }))
    enc = ColQwen3Encoder.from_pretrained(str(folder), device="cpu")
    n_text = len(enc.tokenizer("Query: a red scene", add_special_tokens=False)["input_ids"])
    (q,) = enc.encode_texts(["a red scene"])
    assert len(q) == n_text + 10
    prep = enc.prepare(make_clip(2, 32, 32, start=0.0))
    assert enc.tokenizer.decode(prep["ids"]).endswith("<|vision_end|>Find the moment.<|im_end|><|endoftext|>")


def test_device_map_placement(tiny_colqwen3_dir, tiny_colqwen3):
    clip = make_clip(4, 64, 64)
    (ref,) = tiny_colqwen3.encode_clips([clip])
    parts = {"vlm.visual": "cpu", "vlm.language_model": "cpu", "embedding_proj_layer": "cpu"}
    for device_map in ("auto", parts):
        enc = ColQwen3Encoder.from_pretrained(str(tiny_colqwen3_dir), device_map=device_map)
        torch.testing.assert_close(enc.encode_clips([clip])[0], ref)
    with pytest.raises(ValueError, match="places no module holding embedding_proj_layer"):
        ColQwen3Encoder.from_pretrained(str(tiny_colqwen3_dir), device_map={"vlm.visual": "cpu"})


def test_bfloat16_checkpoint_loads_as_float32_on_cpu(tmp_path, tiny_colqwen3):
    """The published weights are stored in bfloat16; on the CPU they are upcast to float32."""
    folder = _broken(tmp_path, lambda sd: sd.update({k: v.bfloat16() for k, v in sd.items()}))
    enc = ColQwen3Encoder.from_pretrained(str(folder), device="cpu")
    assert all(p.dtype == torch.float32 for p in enc.model.parameters())
    clip = make_clip(4, 64, 64)
    (a,), (b,) = enc.encode_clips([clip]), tiny_colqwen3.encode_clips([clip])
    assert_unit_rows(a)
    assert (a * b).sum(-1).min() > 0.98  # same model up to bfloat16 rounding of the weights


def test_backbone_config_from_published_layout(tiny_colqwen3_dir):
    """transformers-4.x configs keep M-RoPE in rope_scaling + rope_theta; a lost mrope_section would not
    fail loudly (the model would run with default sections), so check the conversion itself."""
    from maxsim.encoders.colqwen3 import backbone_config

    cfg = json.loads((tiny_colqwen3_dir / "config.json").read_text())
    rope = backbone_config(cfg).text_config.rope_parameters
    assert rope["mrope_section"] == [4, 2, 2] and rope["mrope_interleaved"] is True
    assert rope["rope_theta"] == 5000000
    nested = {"model_type": "colqwen3", "embed_dim": 32, "vlm_config": {k: v for k, v in cfg.items()}}
    assert backbone_config(nested).text_config.rope_parameters == rope
    with pytest.raises(ValueError, match="no 'text_config' section"):
        backbone_config({"model_type": "colqwen3"})


def test_shared_frame_thinning_and_token_batches():
    from maxsim.encoders.common import clip_frames, token_budget_batches

    clip = make_clip(10)
    frames, times = clip_frames(clip, 4)
    assert len(frames) == 4 and list(times) == [3.0, 4.5, 6.0, 7.5]  # frames 0, 3, 6, 9: ends kept
    assert np.array_equal(frames[-1], clip.frames[-1])
    assert len(clip_frames(clip, 16)[0]) == 10
    bad = Clip("v.mp4", 0.0, 1.0, clip.frames.astype(np.float32), clip.timestamps)
    with pytest.raises(ValueError, match="'v.mp4'.*uint8 RGB"):
        clip_frames(bad, 4)

    # longest first; a batch holds as many as fit (size x its longest) in the budget; too long: alone
    assert token_budget_batches([10, 40, 20, 20, 100], 60) == [[4], [1], [2, 3, 0]]
    assert token_budget_batches([], 60) == []


def test_default_device_names():
    from maxsim.encoders.checkpoint import default_device

    assert default_device("cpu") == torch.device("cpu")
    assert default_device(None) == default_device("auto") == default_device("")
    assert default_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1'.*no CUDA"):
            default_device("cuda:1")


def test_1080p_frames_sized_to_the_encoder_fill_the_token_budget(tiny_colqwen3):
    """16 frames of a 1080p clip: a 448 px cap gave 896 visual tokens; sized to the encoder's frame_size
    they fill (nearly all of) the 5,120-token budget, as the checkpoint's own pipeline does."""
    from maxsim.ingest import sized_sampler
    from maxsim.media.frames import FrameSampler
    from maxsim.types import Segment

    enc = tiny_colqwen3
    assert enc.frame_size(16).max_pixels == 640 * 32 * 32  # 5,120 tokens over 8 frame pairs
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    sized = sized_sampler(FrameSampler(fps=2.0, max_frames=16), enc).start()
    capped = FrameSampler(fps=2.0, max_frames=16, max_side=448).start()
    for i in range(16):
        sized.feed(i * 0.5, frame)
        capped.feed(i * 0.5, frame)
    clip, _ = sized.clip("v.mp4", Segment(0.0, 8.0), last=True)
    old, _ = capped.clip("v.mp4", Segment(0.0, 8.0), last=True)
    assert enc.visual_tokens(16, *old.frames.shape[1:3]) == 896
    tokens = enc.visual_tokens(16, *clip.frames.shape[1:3])
    assert clip.frames.shape[1:3] == (607, 1079) and 0.9 * 5120 <= tokens <= 5120
    (vecs,) = enc.encode_clips([clip])
    assert vecs.shape == (tokens, DIM)


def test_token_grids_account_for_every_token(tiny_colqwen3, tiny_colqwen2):
    from maxsim.encoders.record import encoder_token_grid
    from maxsim.types import TokenGrid

    clip = make_clip(7, 64, 96)  # an odd count: the last frame pair is padded
    (out,) = tiny_colqwen3.encode_clips([clip])
    grid = encoder_token_grid(tiny_colqwen3, clip, out.shape[0])
    assert grid == TokenGrid(2, 2, 3) and grid.per_step * 4 == out.shape[0]  # 4 pairs of 2 x 3 tokens
    assert tiny_colqwen3.token_grid(make_clip(7, 64, 96), out.shape[0]) == grid  # recomputed, not remembered
    clip2 = make_clip(3, 64, 96)
    (out2,) = tiny_colqwen2.encode_clips([clip2])
    grid2 = encoder_token_grid(tiny_colqwen2, clip2, out2.shape[0])
    assert grid2 is not None and grid2.frames == 1 and grid2.per_step * 3 == out2.shape[0]
    assert encoder_token_grid(tiny_colqwen3, clip, out.shape[0] + 1) is None  # a grid that does not fit


def test_query_token_labels_match_the_query_vectors(tiny_colqwen3, tiny_colqwen2):
    from maxsim.encoders.record import encoder_token_labels

    for enc in (tiny_colqwen3, tiny_colqwen2):
        (q,) = enc.encode_texts(["a red car"])
        labels = encoder_token_labels(enc, "a red car", q.shape[0])
        assert labels is not None and len(labels) == q.shape[0]
        assert "a red car" in "".join(labels).replace("\u2423", " ")  # the tiny tokenizer splits words
