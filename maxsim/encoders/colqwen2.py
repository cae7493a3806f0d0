"""ColQwen2 encoder: transformers' ``ColQwen2ForRetrieval`` (ColQwen2 and ColQwen2.5 checkpoints in the
transformers format, e.g. ``vidore/colqwen2-v1.0-hf``), for hosts with less GPU memory.

ColQwen2 reads images, not videos: a clip's sampled frames are encoded as separate images (the model's
own image prompt), and the clip's tokens are the image tokens of its frames, frame after frame. The
prompt's text and special tokens are left out. A per-clip visual-token budget is split evenly over the
frames (each frame also stays under the checkpoint's own per-image limit). Queries use the processor's
query format (``Query: `` prefix and the augmentation tokens) and keep every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from maxsim.encoders.checkpoint import MODEL_LOAD_OPTIONS, open_checkpoint
from maxsim.encoders.common import GridMemo, clip_frames, pad_batch, token_budget_batches
from maxsim.types import Clip, TokenGrid

MODEL_TYPES: tuple[str, ...] = ("colqwen2",)
DEFAULT_CHECKPOINT = "vidore/colqwen2-v1.0-hf"


@dataclass(frozen=True)
class ColQwen2Settings:
    """Knobs that change what a clip or query turns into (recorded with the index)."""

    max_visual_tokens: int = 5120  # per clip, split evenly over its frames
    max_frames: int | None = None  # subsample a clip's frames uniformly above this many
    batch_tokens: int = 16384  # padded sequence positions per forward pass (frames)
    text_batch_size: int = 64


class ColQwen2Encoder:
    """Multi-vector encoder on a ColQwen2 checkpoint: a clip's tokens are its frames' image tokens."""

    def __init__(self, model: Any, processor: Any, name: str, settings: ColQwen2Settings | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.name = name
        self._settings = settings or ColQwen2Settings()
        self.dim = int(model.config.embedding_dim)
        self.image_token_id = int(processor.image_token_id)
        ip = self.image_processor
        self.tile = int(ip.patch_size) * int(ip.merge_size)
        self.merge = int(ip.merge_size)
        self._grids = GridMemo()
        self.per_image_max = max(int(ip.size.longest_edge) // (self.tile * self.tile), 1)
        self.per_image_min = max(int(ip.size.shortest_edge or 0) // (self.tile * self.tile), 1)
        s = self._settings
        if s.max_visual_tokens < 1:
            raise ValueError(f"max_visual_tokens must be >= 1, got {s.max_visual_tokens}")
        cap = max(s.max_visual_tokens // self.per_image_min, 1)
        self.frame_cap = cap if s.max_frames is None else max(min(s.max_frames, cap), 1)

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        *,
        revision: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        max_visual_tokens: int = 5120,
        max_frames: int | None = None,
        batch_tokens: int = 16384,
        text_batch_size: int = 64,
    ) -> ColQwen2Encoder:
        """Load a transformers-format ColQwen2 checkpoint from a local folder or a Hugging Face id.

        Defaults: CUDA when available; bfloat16 on a GPU, float32 on the CPU. Any missing, unexpected or
        mis-shaped weight is an error (never a silent re-initialisation).
        """
        from transformers import ColQwen2ForRetrieval, ColQwen2Processor

        ckpt = open_checkpoint(
            "colqwen2", id_or_path, device, dtype, revision=revision, local_files_only=local_files_only,
            cache_dir=cache_dir, token=token,
        )
        folder = ckpt.folder
        kwargs: dict[str, Any] = {"dtype": ckpt.dtype, **MODEL_LOAD_OPTIONS}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        if device_map is not None:
            kwargs["device_map"] = device_map
        model, info = ColQwen2ForRetrieval.from_pretrained(str(folder), **kwargs)
        kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
        problems = {k: sorted(map(str, info.get(k) or [])) for k in kinds}
        problems = {k: v for k, v in problems.items() if v}
        if problems:
            detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v[:8])}" for k, v in problems.items())
            raise ValueError(f"ColQwen2 checkpoint {folder} does not match the model: {detail}")
        if device_map is None:
            model.to(ckpt.device)
        model.eval()
        processor = ColQwen2Processor.from_pretrained(str(folder))
        settings = ColQwen2Settings(
            max_visual_tokens=max_visual_tokens, max_frames=max_frames, batch_tokens=batch_tokens,
            text_batch_size=text_batch_size,
        )
        return cls(model, processor, name=ckpt.name, settings=settings)

    @property
    def settings(self) -> dict[str, Any]:
        """Encoding settings (recorded in the index next to ``name`` and ``dim``)."""
        d = asdict(self._settings)
        d["dtype"] = str(self.model.dtype).replace("torch.", "")
        d["per_image_max_tokens"] = self.per_image_max
        d["visual_rows"] = "image_pad tokens of each frame"
        return d

    def with_settings(self, **changes: Any) -> ColQwen2Encoder:
        """A second encoder on the same loaded model with some settings changed; weights are shared."""
        return ColQwen2Encoder(self.model, self.processor, self.name, replace(self._settings, **changes))

    def _input_device(self) -> torch.device:
        return self.model.vlm.get_input_embeddings().weight.device

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        dev = self._input_device()
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False,
                **{k: v.to(dev) for k, v in extra.items()},
            )
        return out.embeddings.float().cpu()

    def token_labels(self, text: str) -> list[str]:
        """Each query token as text (prefix and augmentation tokens included), as :meth:`encode_texts`
        orders its vectors."""
        enc = self.processor(text=[text.strip()], return_tensors="pt")
        ids = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
        return [self.tokenizer.decode([i]).strip() or "\u2423" for i in ids]  # U+2423: a blank

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One (n_tokens, dim) float32 CPU tensor per query (prefix, text and augmentation tokens)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings; wrap a single query in a list")
        out: list[torch.Tensor] = []
        bs = self._settings.text_batch_size
        for i in range(0, len(texts), bs):
            enc = self.processor(text=[t.strip() for t in texts[i:i + bs]], return_tensors="pt")
            emb = self._run(enc["input_ids"], enc["attention_mask"])
            mask = enc["attention_mask"].bool()
            out.extend(emb[j][mask[j]].clone() for j in range(emb.shape[0]))
        return out

    def _frames(self, clip: Clip) -> list[dict[str, Any]]:
        frames, times = clip_frames(clip, self.frame_cap)
        per_frame = max(min(self.per_image_max, self._settings.max_visual_tokens // len(frames)), 1)
        max_pixels = per_frame * self.tile * self.tile
        min_pixels = min(int(self.image_processor.size.shortest_edge or 0), max_pixels)
        feats = self.processor(
            images=list(frames), size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
            return_tensors="pt",
        )
        items = []
        for j in range(len(frames)):
            m = feats["attention_mask"][j].bool()
            grid = feats["image_grid_thw"][j]
            n_patches = int(grid[1] * grid[2])
            items.append({
                "ids": feats["input_ids"][j][m],
                "pixels": feats["pixel_values"][j][:n_patches],
                "grid": grid,
                "time": float(times[j]),
            })
        return items

    def encode_clips_timed(self, clips: Sequence[Clip]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """Like :meth:`encode_clips`, with each token's time (the timestamp of its frame)."""
        from tqdm.auto import tqdm

        items: list[dict[str, Any]] = []
        spans: list[range] = []  # the items (frames) of each clip
        self._grids.reset()
        for clip in clips:
            fr = self._frames(clip)
            self._grids.remember(clip, self._grid_of(fr[0]["grid"]))
            spans.append(range(len(items), len(items) + len(fr)))
            items.extend(fr)
        batches = token_budget_batches([len(it["ids"]) for it in items], self._settings.batch_tokens)
        rows: list[torch.Tensor | None] = [None] * len(items)
        left = self.tokenizer.padding_side == "left"
        quiet = True if len(batches) < 2 else None  # None: show on a terminal only
        for batch in tqdm(batches, desc="encoding frames", unit="batch", disable=quiet):
            most = max(len(items[i]["pixels"]) for i in batch)
            ids, mask = pad_batch([items[i]["ids"] for i in batch], self.tokenizer.pad_token_id, left)
            pix = torch.zeros((len(batch), most, items[batch[0]]["pixels"].shape[-1]))
            for r, i in enumerate(batch):
                pix[r, : len(items[i]["pixels"])] = items[i]["pixels"]
            grid = torch.stack([items[i]["grid"] for i in batch])
            emb = self._run(ids, mask, pixel_values=pix, image_grid_thw=grid)
            visual = (ids == self.image_token_id) & mask.bool()
            for r, i in enumerate(batch):
                rows[i] = emb[r][visual[r]].clone()
        out: list[tuple[torch.Tensor, np.ndarray]] = []
        for mine in spans:
            vecs = torch.cat([rows[i] for i in mine])  # type: ignore[misc]
            times = np.concatenate([np.full(len(rows[i]), items[i]["time"]) for i in mine])  # type: ignore[arg-type]
            out.append((vecs, times))
        return out

    def _grid_of(self, grid: torch.Tensor) -> TokenGrid:
        _, gh, gw = (int(x) for x in grid)
        return TokenGrid(1, gh // self.merge, gw // self.merge)

    def token_grid(self, clip: Clip, n_tokens: int) -> TokenGrid:
        """Each frame an image of ``image_grid_thw``'s rows x columns merged by the merge size (all frames
        of a clip share their size): from the latest :meth:`encode_clips` call, else from the processor."""
        return self._grids.recall(clip) or self._grid_of(self._frames(clip)[0]["grid"])

    def encode_clips(self, clips: Sequence[Clip]) -> list[torch.Tensor]:
        """One (n_tokens, dim) float32 CPU tensor per clip: its frames' image tokens, frame after frame."""
        return [vecs for vecs, _ in self.encode_clips_timed(clips)]

    def __repr__(self) -> str:
        return f"ColQwen2Encoder(name={self.name!r}, dim={self.dim})"


def load(id_or_path: str | None = None, **kwargs: Any) -> ColQwen2Encoder:
    """Registry factory: ``load_encoder("colqwen2", id_or_path=..., device=..., ...)``."""
    return ColQwen2Encoder.from_pretrained(id_or_path or DEFAULT_CHECKPOINT, **kwargs)
