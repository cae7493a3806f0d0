"""Qwen3-VL-Embedding encoder and Qwen3-VL-Reranker on tiny random checkpoints in the published native
Qwen3-VL layout, loaded through the production loaders offline, checked against transformers' own
Qwen3-VL classes and processor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxsim.encoders import load_encoder
from maxsim.encoders.checkpoint import fingerprint
from maxsim.encoders.qwen3vl import CheckpointKeyError
from maxsim.encoders.qwen3vl_embedding import Qwen3VLEmbeddingEncoder
from maxsim.encoders.qwen3vl_reranker import SYSTEM_PROMPT, Qwen3VLReranker
from maxsim.types import Clip, FrameSize

WIDTH = 64  # text hidden size of the tiny checkpoints


def make_clip(n: int, h: int = 64, w: int = 96, start: float = 3.0, seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return Clip("video.mp4", start, start + 0.5 * n, frames, start + 0.5 * np.arange(n))


def unit_rows(t: torch.Tensor, dim: int = WIDTH) -> None:
    assert t.dtype == torch.float32 and t.ndim == 2 and t.shape[1] == dim and torch.isfinite(t).all()
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(len(t)), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def reference(tiny_qwen3vl_dir):
    """transformers' own Qwen3VLForConditionalGeneration on the same checkpoint (its own key handling)."""
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(str(tiny_qwen3vl_dir), dtype=torch.float32).eval()


def last_hidden(ref, ids: list[int], video=None) -> torch.Tensor:
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if video is not None:
        inputs["pixel_values_videos"] = video.pixels
        inputs["video_grid_thw"] = video.grid[None]
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == ref.config.video_token_id).long() * 2
    with torch.inference_mode():
        return ref.model(**inputs).last_hidden_state[0, -1]


# ------------------------------------------------------------------------------------------ embedding
def test_dispatched_by_model_type_and_named(tiny_qwen3vl_dir, tiny_qwen3vl_embedding):
    enc = load_encoder(str(tiny_qwen3vl_dir), device="cpu")
    assert isinstance(enc, Qwen3VLEmbeddingEncoder)
    assert enc.name == f"qwen3-vl-embedding:{tiny_qwen3vl_dir.name}@{fingerprint(tiny_qwen3vl_dir)}"
    assert enc.dim == WIDTH
    s = tiny_qwen3vl_embedding.settings
    assert s["per"] == "segment" and s["max_visual_tokens"] == 7680
    assert s["instruction"] == "Represent the user's input."
    json.dumps(s)


def test_query_format_and_pooling_match_the_published_script(tiny_qwen3vl_embedding, reference):
    enc = tiny_qwen3vl_embedding
    ids = enc.query_ids("  a red car ")
    expected = ("<|im_start|>system\nFind a video that contains the following visual content.<|im_end|>\n"
                "<|im_start|>user\na red car<|im_end|>\n<|im_start|>assistant\n")
    assert ids == enc.tokenizer(expected, add_special_tokens=False)["input_ids"]
    (vec,) = enc.encode_texts(["a red car"])
    unit_rows(vec)
    ref = torch.nn.functional.normalize(last_hidden(reference, ids), dim=-1)
    torch.testing.assert_close(vec[0], ref, atol=2e-5, rtol=0)  # last token, L2-normalised


def test_instruction_gets_punctuation_and_empty_query_is_null(tiny_qwen3vl_embedding):
    enc = tiny_qwen3vl_embedding.with_settings(query_instruction="Retrieve clips of the query")
    text = enc.tokenizer.decode(enc.query_ids(""))
    assert "system\nRetrieve clips of the query.<|im_end|>" in text and "user\nNULL<|im_end|>" in text
    assert enc.with_settings(query_instruction="Find it:").tokenizer.decode(
        enc.with_settings(query_instruction="Find it:").query_ids("x")).count("Find it:<|im_end|>") == 1


def test_padded_queries_encode_as_alone(tiny_qwen3vl_embedding):
    texts = ["a", "a much longer query about a blue car at night", "dog"]
    batch = tiny_qwen3vl_embedding.encode_texts(texts)
    for text, got in zip(texts, batch, strict=True):
        torch.testing.assert_close(got, tiny_qwen3vl_embedding.encode_texts([text])[0], atol=2e-5, rtol=0)


def test_clip_prompt_is_the_published_video_expansion(tiny_qwen3vl_dir, tiny_qwen3vl_embedding):
    """Our video block equals transformers' Qwen3VLProcessor's, minus the outer vision_start/vision_end
    that transformers 5.0-5.24 keep around it (4.57, which the models were published with, and 5.25 replace
    them)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    enc = tiny_qwen3vl_embedding
    clip = make_clip(6)
    ids, video = enc._prepare(clip, 6)
    proc = Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor.from_pretrained(str(tiny_qwen3vl_dir)),
                            tokenizer=enc.tokenizer, video_processor=enc.video.processor)
    text = ("<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    rel = clip.timestamps - clip.start
    md = VideoMetadata(total_num_frames=6, fps=2.0, frames_indices=np.round(rel * 2).astype(int),
                       duration=2.5)
    budget = 3 * 768 * 32 * 32 * 2
    out = proc(text=[text], videos=[clip.frames], video_metadata=[md], do_sample_frames=False,
               cap_pixels_per_frame=False, size={"shortest_edge": 2048, "longest_edge": budget},
               return_tensors="pt")
    ref = out["input_ids"][0].tolist()
    start, end = enc.video.vision_start_id, enc.video.vision_end_id
    frames = int(video.grid[0])  # one vision_start per temporal patch, after its timestamp
    assert ids.count(start) == frames
    if ref.count(start) == frames + 1:  # transformers 5.0-5.24: the prompt's own pair kept around the block
        first = ref.index(start)
        last = len(ref) - 1 - ref[::-1].index(end)
        ref = ref[:first] + ref[first + 1:last] + ref[last + 1:]
    assert ids == ref
    assert "<0.2 seconds>" in enc.tokenizer.decode(ids) and "<2.2 seconds>" in enc.tokenizer.decode(ids)
    assert torch.equal(out["video_grid_thw"][0], video.grid)
    torch.testing.assert_close(out["pixel_values_videos"], video.pixels)


def test_clip_vector_is_the_last_token_of_the_video_prompt(tiny_qwen3vl_embedding, reference):
    enc = tiny_qwen3vl_embedding
    clips = [make_clip(6), make_clip(3, 32, 64, seed=1), make_clip(8, 96, 64, seed=2)]
    out = enc.encode_clips(clips)
    assert [tuple(v.shape) for v in out] == [(1, WIDTH)] * 3
    for clip, vec in zip(clips, out, strict=True):
        unit_rows(vec)
        ids, video = enc._prepare(clip, len(clip.timestamps))
        ref = torch.nn.functional.normalize(last_hidden(reference, ids, video), dim=-1)
        torch.testing.assert_close(vec[0], ref, atol=5e-5, rtol=0)  # batched, left padded: same vector


def test_per_frames_gives_one_vector_per_frame_pair(tiny_qwen3vl_embedding):
    enc = tiny_qwen3vl_embedding.with_settings(per="frames")
    clip = make_clip(7)
    vecs, times = enc.encode_clips_timed([clip])[0]
    assert vecs.shape == (4, WIDTH) and enc.dim == WIDTH
    unit_rows(vecs)
    np.testing.assert_allclose(times, [3.25, 4.25, 5.25, 6.0])  # pair means; the last frame alone
    # each row is the pair encoded on its own (with the whole clip's per-pair budget)
    pair = Clip(clip.video, 4.0, 4.5, clip.frames[2:4], clip.timestamps[2:4])
    alone = tiny_qwen3vl_embedding.with_settings(max_group_tokens=enc._pair_tokens(7)).encode_clips([pair])[0]
    torch.testing.assert_close(vecs[1], alone[0], atol=5e-5, rtol=0)
    assert not torch.allclose(vecs[0], vecs[1])
    frames3 = tiny_qwen3vl_embedding.with_settings(per="frames", frames_per_vector=3)
    assert frames3.encode_clips([clip])[0].shape == (3, WIDTH)


def test_registered_frames_variant_and_matryoshka_dim(tiny_qwen3vl_dir, tiny_qwen3vl_embedding):
    enc = load_encoder(f"qwen3-vl-embedding-frames:{tiny_qwen3vl_dir}", device="cpu", dim=16)
    assert enc.settings["per"] == "frames" and enc.dim == 16
    q16 = enc.encode_texts(["red"])[0]
    full = tiny_qwen3vl_embedding.encode_texts(["red"])[0]
    unit_rows(q16, 16)
    torch.testing.assert_close(q16[0], torch.nn.functional.normalize(full[0, :16], dim=-1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="dim must be from 1 to the model width 64"):
        tiny_qwen3vl_embedding.with_settings(dim=65)
    with pytest.raises(ValueError, match="per must be one of"):
        tiny_qwen3vl_embedding.with_settings(per="tokens")
    with pytest.raises(TypeError, match="unknown Qwen3-VL-Embedding setting"):
        load_encoder(str(tiny_qwen3vl_dir), device="cpu", max_tokens=3)


def test_frame_size_spreads_the_budget(tiny_qwen3vl_embedding):
    enc = tiny_qwen3vl_embedding
    assert enc.frame_size(16) == FrameSize(max_pixels=768 * 32 * 32)  # 8 pairs: the per-pair cap binds
    assert enc.frame_size(64) == FrameSize(max_pixels=240 * 32 * 32)  # 32 pairs share 7,680 tokens
    assert enc.frame_size(200) == enc.frame_size(64)  # thinned to max_frames=64


def test_untied_checkpoint_loads_and_keys_are_strict(tiny_qwen3vl_untied_dir, tmp_path):
    from tests.tiny_models import build_tiny_qwen3vl

    enc = load_encoder(str(tiny_qwen3vl_untied_dir), device="cpu")  # lm_head.weight present, 2 shards
    unit_rows(enc.encode_texts(["x"])[0])

    def drop(sd):
        del sd["model.language_model.layers.1.mlp.down_proj.weight"]

    bad = build_tiny_qwen3vl(tmp_path / "missing", state_dict_edit=drop)
    with pytest.raises(CheckpointKeyError, match=r"missing .*vlm\.language_model\.layers\.1\.mlp\.down_proj"):
        load_encoder(str(bad), device="cpu")

    def extra(sd):
        sd["model.visual.extra.weight"] = torch.zeros(2)

    bad = build_tiny_qwen3vl(tmp_path / "extra", state_dict_edit=extra)
    with pytest.raises(CheckpointKeyError, match=r"unexpected .*model\.visual\.extra\.weight"):
        load_encoder(str(bad), device="cpu")


def test_a_colqwen3_folder_is_refused(tiny_colqwen3_dir):
    with pytest.raises(ValueError, match="model_type 'colqwen3'.*Qwen3-VL checkpoint"):
        load_encoder(f"qwen3-vl-embedding:{tiny_colqwen3_dir}", device="cpu")


# ------------------------------------------------------------------------------------------- reranker
@pytest.fixture(scope="module")
def reranker(tiny_qwen3vl_dir):
    return Qwen3VLReranker.from_pretrained(str(tiny_qwen3vl_dir), device="cpu", local_files_only=True)


def test_reranker_prompt_is_the_published_format(reranker):
    text = reranker.tokenizer.decode(reranker.pair_ids(" a dog ", [reranker.video.video_token_id]))
    assert text == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<Instruct>: Given a search "
        "query, retrieve relevant candidates that answer the query.<Query>:a dog\n<Document>:<|video_pad|>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_reranker_score_is_p_yes_at_the_last_position(reranker, reference):
    clips = [make_clip(4), make_clip(6, 32, 64, seed=3), make_clip(2, seed=4)]
    scores = reranker.score("a dog", clips)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    yes, no = reranker.tokenizer.get_vocab()["yes"], reranker.tokenizer.get_vocab()["no"]
    for clip, got in zip(clips, scores, strict=True):
        n = len(clip.timestamps)
        video = reranker.video.prepare(clip, 64, reranker._pair_tokens(n) * ((n + 1) // 2))
        ids = reranker.pair_ids("a dog", video.ids)
        inputs = {"input_ids": torch.tensor([ids]), "pixel_values_videos": video.pixels,
                  "video_grid_thw": video.grid[None],
                  "mm_token_type_ids": (torch.tensor([ids]) == reranker.video.video_token_id).long() * 2}
        with torch.inference_mode():
            logits = reference(**inputs).logits[0, -1]  # tied: the LM head is the word embeddings
        p_yes = torch.softmax(logits[[yes, no]].float(), dim=0)[0]
        assert got == pytest.approx(float(p_yes), abs=2e-5)
    assert reranker.score("a dog", clips[:1])[0] == pytest.approx(scores[0], abs=2e-5)  # batch-independent


def test_reranker_reads_lm_head_rows_when_untied(tiny_qwen3vl_untied_dir):
    from safetensors import safe_open

    from maxsim.encoders.qwen3vl import checkpoint_keys

    rr = Qwen3VLReranker.from_pretrained(str(tiny_qwen3vl_untied_dir), device="cpu")
    vocab = rr.tokenizer.get_vocab()
    where = checkpoint_keys(tiny_qwen3vl_untied_dir)["lm_head.weight"]
    with safe_open(str(where), framework="pt") as fh:
        head = fh.get_tensor("lm_head.weight")
    torch.testing.assert_close(rr.direction, head[vocab["yes"]] - head[vocab["no"]])
    assert rr.frame_size(16) == FrameSize(max_pixels=768 * 32 * 32)


def test_reranker_needs_yes_and_no_tokens(tmp_path, tiny_qwen3vl_dir):
    import shutil

    from tests.tiny_models import build_tokenizer

    folder = tmp_path / "no-yes"
    shutil.copytree(tiny_qwen3vl_dir, folder)
    build_tokenizer().save_pretrained(str(folder))  # without the "yes"/"no" merges
    with pytest.raises(ValueError, match=r"no single token for \['yes', 'no'\]"):
        Qwen3VLReranker.from_pretrained(str(folder), device="cpu")
