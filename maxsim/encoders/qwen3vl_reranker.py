"""Qwen3-VL-Reranker: the relevance of a video segment to a text query, judged by the full vision-language
model (Qwen/Qwen3-VL-Reranker-2B or -8B), for re-ranking the top hits of a first-stage search.

The input follows the published reranker script (``Qwen3VLReranker`` of QwenLM/Qwen3-VL-Embedding,
transformers 4.57): a one-turn chat asking for a yes/no judgement, scored at the last position as
``sigmoid(h . (w_yes - w_no))`` (the probability of "yes" against "no" from the LM head's two rows)::

    <|im_start|>system\\nJudge whether the Document meets the requirements based on the Query and the
    Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\\n<|im_start|>user\\n
    <Instruct>: {instruction}<Query>:{query}\\n<Document>:{video}<|im_end|>\\n<|im_start|>assistant\\n

``{video}`` is the segment's frames expanded as the published Qwen3-VL processor does (a ``<t seconds>``
marker and a vision block per frame pair). Where this may differ from the script: our own frame decoding
and resizing, timestamps from the segment start, the smallest frame set by the video processor rather
than qwen-vl-utils, and pairs batched by a token budget (the script scores one pair at a time).

Weights: the native Qwen3-VL layout through the same strict key map as the embedding model; of the LM head
only the "yes" and "no" rows are read (from ``lm_head.weight``, or the word embeddings when tied).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from maxsim.encoders.checkpoint import open_checkpoint
from maxsim.encoders.common import token_budget_batches
from maxsim.encoders.qwen3vl import (
    LM_HEAD,
    LastTokenModel,
    VideoFormat,
    chat_ids,
    checkpoint_keys,
    group_count,
    load_last_token_model,
    model_inputs,
    read_config,
    read_rows,
)
from maxsim.types import Clip, FrameSize

DEFAULT_CHECKPOINT = "Qwen/Qwen3-VL-Reranker-2B"
FAMILY = "Qwen3-VL-Reranker"
SYSTEM_PROMPT = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."


@dataclass(frozen=True)
class Qwen3VLRerankerSettings:
    """What a (query, segment) pair turns into."""

    instruction: str = DEFAULT_INSTRUCTION
    max_visual_tokens: int = 7680  # per segment (the published script's total)
    max_group_tokens: int = 768  # per frame pair at most
    max_frames: int = 64
    batch_tokens: int = 16384  # padded sequence positions per forward pass


class Qwen3VLReranker:
    """Scores (query, clip) pairs with a Qwen3-VL-Reranker checkpoint: ``score(query, clips)`` gives one
    probability-like relevance in [0, 1] per clip (see the module docstring for the format)."""

    def __init__(self, model: LastTokenModel, tokenizer: Any, video_processor: Any, yes_no: torch.Tensor,
                 name: str, settings: Qwen3VLRerankerSettings | None = None):
        self.model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = "<|endoftext|>"
        cfg = model.config
        self.video = VideoFormat(video_processor, self._ids, int(cfg.video_token_id),
                                 int(cfg.vision_start_token_id), int(cfg.vision_end_token_id))
        self.video.check(cfg.vision_config)
        if tuple(yes_no.shape) != (2, cfg.text_config.hidden_size):
            raise ValueError(f"yes/no rows must have shape (2, {cfg.text_config.hidden_size}), got "
                             f"{tuple(yes_no.shape)}")
        # sigmoid(h.w_yes - h.w_no) = softmax over the two logits: P(yes)
        self.direction = (yes_no[0].float() - yes_no[1].float()).to(model.input_device)
        self.name = name
        self._settings = settings or Qwen3VLRerankerSettings()
        first = next(model.parameters()).device
        self._preprocess_device = str(first) if first.type == "cuda" else None

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        revision: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        max_memory: dict[Any, Any] | None = None,
        attn_implementation: str | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        **settings: Any,
    ) -> Qwen3VLReranker:
        """Load a Qwen3-VL-Reranker checkpoint (hub id or local folder in the published layout);
        ``settings`` are fields of :class:`Qwen3VLRerankerSettings`."""
        from transformers import Qwen2Tokenizer, Qwen3VLVideoProcessor

        known = Qwen3VLRerankerSettings.__dataclass_fields__
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise TypeError(f"unknown Qwen3-VL-Reranker setting(s) {unknown}; known: {sorted(known)}")
        ckpt = open_checkpoint(
            "qwen3-vl-reranker", id_or_path, device, dtype, revision=revision,
            local_files_only=local_files_only, cache_dir=cache_dir, token=token,
        )
        model = load_last_token_model(ckpt.folder, FAMILY, ckpt.device, ckpt.dtype, device_map,
                                      attn_implementation, max_memory)
        tokenizer = Qwen2Tokenizer.from_pretrained(str(ckpt.folder))
        vocab = tokenizer.get_vocab()
        missing = [w for w in ("yes", "no") if w not in vocab]
        if missing:
            raise ValueError(f"the tokenizer of {ckpt.folder} has no single token for {missing}: not a "
                             "Qwen3-VL-Reranker tokenizer")
        rows = [vocab["yes"], vocab["no"]]
        cfg = read_config(ckpt.folder)
        tied = cfg.get("tie_word_embeddings", (cfg.get("text_config") or {}).get("tie_word_embeddings"))
        if LM_HEAD in checkpoint_keys(ckpt.folder):
            yes_no = read_rows(ckpt.folder, LM_HEAD, rows)
        elif tied:
            yes_no = model.vlm.language_model.embed_tokens.weight[rows].detach()
        else:
            raise ValueError(f"{ckpt.folder} has no {LM_HEAD} and does not tie its word embeddings: the "
                             "yes/no scores cannot be computed")
        video_processor = Qwen3VLVideoProcessor.from_pretrained(str(ckpt.folder))
        return cls(model, tokenizer, video_processor, yes_no, ckpt.name, Qwen3VLRerankerSettings(**settings))

    @property
    def settings(self) -> dict[str, Any]:
        d = asdict(self._settings)
        d["dtype"] = str(next(self.model.parameters()).dtype).replace("torch.", "")
        return d

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _pair_tokens(self, n_frames: int) -> int:
        s = self._settings
        pairs = group_count(min(n_frames, s.max_frames), self.video.temporal)
        return max(1, min(s.max_group_tokens, s.max_visual_tokens // pairs))

    def frame_size(self, n_frames: int) -> FrameSize:
        """The largest frames worth decoding for a clip of ``n_frames`` frames."""
        return FrameSize(max_pixels=self._pair_tokens(n_frames) * self.video.tile ** 2)

    def pair_ids(self, query: str, video_ids: list[int]) -> list[int]:
        """Token ids of one (query, expanded video) pair in the published format."""
        user = f"<Instruct>: {self._settings.instruction}<Query>:{query.strip() or 'NULL'}\n<Document>:"
        return chat_ids(self._ids, SYSTEM_PROMPT, user, video_ids)

    def score(self, query: str, clips: Sequence[Clip]) -> list[float]:
        """The relevance of each clip to ``query``: P("yes") in [0, 1], higher is more relevant."""
        from tqdm.auto import tqdm

        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        s = self._settings
        items = []
        for clip in clips:
            n = min(len(clip.timestamps), s.max_frames)
            tokens = self._pair_tokens(n) * group_count(n, self.video.temporal)
            video = self.video.prepare(clip, s.max_frames, tokens, device=self._preprocess_device)
            items.append((self.pair_ids(query, video.ids), video))
        scores: list[float] = [0.0] * len(items)
        batches = token_budget_batches([len(ids) for ids, _ in items], s.batch_tokens)
        quiet = True if len(batches) < 2 else None
        for batch in tqdm(batches, desc="reranking", unit="batch", disable=quiet):
            inputs, _, _ = model_inputs([items[i][0] for i in batch], [items[i][1] for i in batch],
                                        self.tokenizer.pad_token_id, self.video.video_token_id,
                                        self.model.input_device)
            with torch.inference_mode():
                last = self.model(**inputs)
                probs = torch.sigmoid(last @ self.direction).cpu()
            for row, i in enumerate(batch):
                scores[i] = float(probs[row])
        return scores

    def __repr__(self) -> str:
        return f"Qwen3VLReranker(name={self.name!r}, device={self.model.input_device})"


def load(id_or_path: str | None = None, **kwargs: Any) -> Qwen3VLReranker:
    """Registry factory: ``load_reranker("qwen3-vl-reranker", id_or_path=..., device=...)``."""
    return Qwen3VLReranker.from_pretrained(id_or_path or DEFAULT_CHECKPOINT, **kwargs)
