"""CLIP / SigLIP / SigLIP 2 frame encoders on tiny random checkpoints in each family's published layout,
loaded through the production loader offline and checked against transformers' own model and processor
usage; then end to end through an engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxsim.encoders import encoder_family, load_encoder, name_family
from maxsim.encoders.clip import ClipFrameEncoder, processor_frame_size
from maxsim.types import Clip, FrameSize

FAMILIES = ("clip", "siglip", "siglip2")
DIMS = {"clip": 24, "siglip": 32, "siglip2": 32}


def make_clip(n: int, h: int = 48, w: int = 80, start: float = 2.0, seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return Clip("video.mp4", start, start + n, frames, start + np.arange(n) + 0.5)


def reference(folder):
    """The family's model, image processor and tokenizer as transformers' model cards load them."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoImageProcessor.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_frame_model_dirs):
    folder = tiny_frame_model_dirs[request.param]
    enc = load_encoder(str(folder), device="cpu", dtype="float32")
    return request.param, folder, enc


def test_dispatched_by_model_type(family):
    name, folder, enc = family
    assert isinstance(enc, ClipFrameEncoder) and enc.model_type == name
    assert not enc.model.use_kernels  # Hub kernels stay off: loads run installed code only
    family = "clip" if name == "clip" else "siglip"  # SigLIP 2 loads through (and is named by) "siglip"
    assert enc.name.startswith(f"{family}:{folder.name}@sha256-") and enc.dim == DIMS[name]
    assert encoder_family(str(folder)) == name_family(enc.name) == family  # compared before loading
    s = enc.settings
    assert s["family"] == name and s["dtype"] == "float32" and s["vectors"] == "one per frame"
    json.dumps(s)


def test_frames_match_the_model_card_usage(family):
    name, folder, enc = family
    clip = make_clip(5)
    (vecs,) = enc.encode_clips([clip])
    assert vecs.shape == (5, DIMS[name]) and vecs.dtype == torch.float32
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(5), atol=1e-5, rtol=0)
    model, processor, _ = reference(folder)
    with torch.inference_mode():
        pixels = processor(images=list(clip.frames), return_tensors="pt")
        ref = model.get_image_features(**pixels).pooler_output
    torch.testing.assert_close(vecs, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=0)
    timed, times = enc.encode_clips_timed([clip])[0]
    np.testing.assert_array_equal(times, clip.timestamps)


def test_texts_match_the_model_card_usage(family):
    name, folder, enc = family
    texts = ["a red car", "the dog on the grass at night", ""]
    out = enc.encode_texts(texts)
    assert [tuple(t.shape) for t in out] == [(1, DIMS[name])] * 3
    model, _, tok = reference(folder)
    # CLIP pools its end-of-text token: padding to the longest is as trained; SigLIP pools the last position
    # and was trained on texts padded to the full length.
    padding = {"padding": True} if name == "clip" else {"padding": "max_length", "max_length": 16}
    enc_in = tok([t.strip() for t in texts], truncation=True, return_tensors="pt", **padding)
    with torch.inference_mode():
        ref = model.get_text_features(**enc_in).pooler_output
    torch.testing.assert_close(torch.cat(out), torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=0)
    alone = enc.encode_texts(["a red car"])[0]
    torch.testing.assert_close(alone, out[0], atol=1e-5, rtol=0)


def test_frame_size_comes_from_the_processor(family):
    name, _, enc = family
    want = {"clip": FrameSize(short_side=32), "siglip": FrameSize(short_side=32),
            "siglip2": FrameSize(max_pixels=16 * 8 * 8)}[name]
    assert enc.frame_size(16) == want == processor_frame_size(enc.image_processor)


def test_bf16_is_the_cpu_default_where_the_cpu_has_it(tiny_frame_model_dirs, monkeypatch):
    folder = tiny_frame_model_dirs["siglip"]
    monkeypatch.setenv("MAXSIM_CPU_BF16", "1")
    enc = load_encoder(str(folder), device="cpu")
    assert enc.dtype == torch.bfloat16 and enc.settings["dtype"] == "bfloat16"
    vec = enc.encode_clips([make_clip(2)])[0]
    assert vec.dtype == torch.float32  # stored as float32 rows, normalised after the cast
    torch.testing.assert_close(vec.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
    monkeypatch.setenv("MAXSIM_CPU_BF16", "0")
    assert load_encoder(str(folder), device="cpu").dtype == torch.float32
    monkeypatch.setenv("MAXSIM_CPU_BF16", "1")
    assert load_encoder(str(folder), device="cpu", dtype="float32").dtype == torch.float32  # asked for


def test_registered_names_and_defaults(tiny_frame_model_dirs):
    from maxsim.encoders import registered_encoders
    from maxsim.encoders.clip import DEFAULT_CLIP, DEFAULT_SIGLIP

    assert {"clip", "siglip"} <= set(registered_encoders())
    assert DEFAULT_SIGLIP == "google/siglip2-base-patch16-224"
    assert DEFAULT_CLIP == "openai/clip-vit-base-patch32"
    enc = load_encoder(f"siglip:{tiny_frame_model_dirs['clip']}", device="cpu")  # any family by its config
    assert enc.model_type == "clip"


def test_checkpoint_must_match_its_architecture(tiny_frame_model_dirs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(tiny_frame_model_dirs["siglip"], folder)
    sd = load_file(str(folder / "model.safetensors"))
    sd.pop(next(k for k in sd if k.startswith("text_model.encoder.layers.1.")))
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not match the siglip architecture.*missing keys: text_model"):
        load_encoder(str(folder), device="cpu")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "blip"}))
    with pytest.raises(ValueError, match="model_type 'blip'"):
        ClipFrameEncoder.from_pretrained(str(folder), device="cpu")


def test_bad_frames_are_refused_with_the_clip_named(family):
    _, _, enc = family
    bad = Clip("v.mp4", 0.0, 1.0, np.zeros((2, 8, 8, 3), dtype=np.float32), np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="'v.mp4'.*uint8 RGB"):
        enc.encode_clips([bad])


def test_engine_end_to_end_with_siglip(tiny_frame_model_dirs, scenes_video, tmp_path):
    """Ingest and search with the frame encoder: one row per sampled frame, frames sized by the processor,
    the best frame's time as best_time."""
    from maxsim import Engine, FrameSampler

    folder = tiny_frame_model_dirs["siglip"]
    engine = Engine(tmp_path / "idx", encoder=str(folder), segmenter="fixed:4",
                    sampler=FrameSampler(fps=1.0, max_frames=4))
    assert engine.frame_sampler.name == "frames(fps=1, max_frames=4, size=short_side=32)"
    report = engine.ingest([scenes_video.path], progress=False)
    assert report.ok and report.segments == 3
    snap = engine.store.snapshot()
    assert [len(snap.segment_tokens(r)) for r in range(3)] == [4, 4, 2]  # one row per frame
    hits = engine.search("red", k=3)
    assert len(hits) == 3 and all(h.best_time in h.frame_times for h in hits)
    assert all(h.scores == {"maxsim": pytest.approx(h.score)} for h in hits)
    reopened = Engine(tmp_path / "idx")  # the recorded spec reloads the encoder
    assert [h.segment_id for h in reopened.search("red", k=3)] == [h.segment_id for h in hits]
