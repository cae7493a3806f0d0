"""A tiny random-weight Whisper checkpoint for offline tests: the real Whisper model, tokenizer (byte-level
BPE with Whisper's special and timestamp tokens) and feature extractor classes, saved with
save_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
MERGES = ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e d"]


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in byte order (GPT-2's mapping)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def build_tiny_whisper(folder: str | Path, seed: int = 0) -> Path:
    """Write a ~1 MB multilingual Whisper (1 encoder and 1 decoder layer, d_model 16, 30 s windows) with its
    tokenizer, feature extractor and generation config to ``folder``."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {sym: i for i, sym in enumerate(byte_symbols())}
    for m in MERGES:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    eot = SPECIALS[0]
    tok = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=eot,
                           bos_token=eot, eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])  # right after <|notimestamps|>
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    assert tok.convert_tokens_to_ids("<|0.00|>") == ids["<|notimestamps|>"] + 1
    cfg = WhisperConfig(
        vocab_size=((len(tok) + 63) // 64) * 64, num_mel_bins=80, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        d_model=16,
        max_source_positions=1500, max_target_positions=64, pad_token_id=ids[eot], bos_token_id=ids[eot],
        eos_token_id=ids[eot], decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[eot], pad_token_id=ids[eot],
        bos_token_id=ids[eot], no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        prev_sot_token_id=ids["<|startofprev|>"], max_initial_timestamp_index=50, max_length=64,
    )
    model.save_pretrained(str(folder))
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok)
    processor.save_pretrained(str(folder))
    return folder
