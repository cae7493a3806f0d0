"""Text encoders for the transcript channel: a transformers text model (a sentence-transformers folder
or any Hugging Face encoder checkpoint) turning cue lines and queries into L2-normalised vectors.

Two ways to represent a text, chosen by ``per``:

- ``per="tokens"`` (default): one row per token, the model's last hidden states, each L2-normalised;
  the tokens the tokenizer adds (``[CLS]``, ``[SEP]``, padding) are dropped. Cues and queries are
  multi-vectors scored with MaxSim, like the visual channel. A text with no token of its own (empty)
  gets one row, the normalised mean of all its positions.
- ``per="cue"``: one row per text, pooled as the checkpoint's sentence-transformers configuration says
  (``1_Pooling/config.json``: mean, CLS, max, mean-sqrt-len, weighted mean, last token, concatenated in
  that order when several are on; mean when there is no such file), then its ``Dense`` layers, then
  L2-normalised: the checkpoint's sentence embedding (cosine similarity).

The same encoder encodes queries (:meth:`TextEncoder.encode_queries`) and cue lines
(:meth:`TextEncoder.encode_cues`); they differ only when the checkpoint declares prompts
(``config_sentence_transformers.json``: ``query``, and ``document`` / ``passage`` / ``corpus``). Texts
longer than ``max_length`` tokens (the checkpoint's ``max_seq_length``, else its tokenizer's limit,
at most 512) are truncated.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from maxsim.encoders.checkpoint import (
    MODEL_LOAD_OPTIONS,
    MissingWeightsError,
    default_device,
    fingerprint,
    resolve_checkpoint,
    resolve_dtype,
)
from maxsim.transcripts.specs import join_options

PER_MODES = ("tokens", "cue")
SPEC_OPTIONS = ("per", "max_length", "pooling")  # the settings a spec carries (they change the vectors)
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
_ST_POOLING_KEYS = {  # sentence-transformers' Pooling config keys, in its concatenation order
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": torch.tanh, "torch.nn.modules.linear.Identity": None,
    "torch.nn.modules.activation.ReLU": torch.relu, "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
}
_MODULES_SKIPPED = ("Normalize",)  # every output is normalised anyway


@dataclass(frozen=True)
class TextEncoderSettings:
    """Knobs of a :class:`TextEncoder`; all but ``text_batch_size`` change the vectors."""

    per: str = "tokens"  # "tokens" (multi-vector) or "cue" (one pooled vector)
    max_length: int = 256  # tokens per text, longer texts are truncated
    pooling: tuple[str, ...] = ("mean",)  # used with per="cue"
    text_batch_size: int = 64  # texts per forward pass

    def __post_init__(self) -> None:
        if self.per not in PER_MODES:
            raise ValueError(f"per must be one of {PER_MODES}, got {self.per!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        bad = [m for m in self.pooling if m not in POOLING_MODES]
        if bad or not self.pooling:
            raise ValueError(f"pooling must be one or more of {POOLING_MODES}, got {self.pooling!r}")
        if self.text_batch_size < 1:
            raise ValueError(f"text_batch_size must be >= 1, got {self.text_batch_size}")


@dataclass
class Dense:
    """A sentence-transformers ``Dense`` module: ``activation(x @ weight.T + bias)``."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: Any

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight.to(x.device, x.dtype), None if self.bias is None else
                     self.bias.to(x.device, x.dtype))
        return y if self.activation is None else self.activation(y)


@dataclass(frozen=True)
class CheckpointLayout:
    """What a text checkpoint folder holds, read from its sentence-transformers files when present."""

    transformer: Path  # folder of the transformers model
    pooling: tuple[str, ...] | None  # from 1_Pooling/config.json, None when absent
    dense: tuple[Path, ...]  # Dense module folders, in order
    max_seq_length: int | None
    lowercase: bool
    query_prompt: str
    cue_prompt: str


def read_layout(folder: Path) -> CheckpointLayout:
    """The layout of a sentence-transformers folder (``modules.json``), or of a plain transformers one.
    Raises ValueError for a module type that cannot be reproduced here."""
    modules_file = folder / "modules.json"
    transformer, pooling, dense = folder, None, []
    if modules_file.is_file():
        for mod in json.loads(modules_file.read_text()):
            kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
            path = folder / str(mod.get("path", ""))
            if kind == "Transformer":
                transformer = path
            elif kind == "Pooling":
                cfg = json.loads((path / "config.json").read_text())
                pooling = tuple(m for key, m in _ST_POOLING_KEYS.items() if cfg.get(key))
            elif kind == "Dense":
                dense.append(path)
            elif kind not in _MODULES_SKIPPED:
                raise ValueError(f"{modules_file}: sentence-transformers module {mod.get('type')!r} is not "
                                 "supported (Transformer, Pooling, Dense and Normalize are)")
    sbert: dict[str, Any] = {}
    for cand in (transformer / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        if cand.is_file():
            sbert = json.loads(cand.read_text())
            break
    st_cfg_file = folder / "config_sentence_transformers.json"
    prompts = (json.loads(st_cfg_file.read_text()).get("prompts") or {}) if st_cfg_file.is_file() else {}
    cue_prompt = next((prompts[k] for k in ("document", "passage", "corpus") if prompts.get(k)), "")
    return CheckpointLayout(transformer, pooling, tuple(dense), sbert.get("max_seq_length"),
                            bool(sbert.get("do_lower_case", False)), prompts.get("query") or "", cue_prompt)


def _load_dense(path: Path) -> Dense:
    cfg = json.loads((path / "config.json").read_text())
    act_name = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if act_name not in _ACTIVATIONS:
        raise ValueError(f"{path}: Dense activation {act_name!r} is not supported ({sorted(_ACTIVATIONS)})")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise MissingWeightsError(f"{path}: Dense module without model.safetensors or pytorch_model.bin")
    weight = sd["linear.weight"].float()
    if tuple(weight.shape) != (cfg["out_features"], cfg["in_features"]):
        raise ValueError(f"{path}: Dense weight has shape {tuple(weight.shape)}, config says "
                         f"({cfg['out_features']}, {cfg['in_features']})")
    bias = sd.get("linear.bias")
    return Dense(weight, None if bias is None else bias.float(), _ACTIVATIONS[act_name])


def checkpoint_revision(folder: Path, layout: CheckpointLayout) -> str:
    """A content fingerprint of a local text checkpoint: its transformer's config and weights and its
    Dense modules' (see :func:`maxsim.encoders.checkpoint.fingerprint`)."""
    parts = [fingerprint(layout.transformer)] + [fingerprint(d) for d in layout.dense]
    if len(parts) == 1:
        return parts[0]
    return "sha256-" + hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """Sentence vectors (batch, len(modes) * dim) of token states (batch, seq, dim) under an attention
    mask (batch, seq), as sentence-transformers' Pooling computes them (right-padded batches)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    lengths = m.sum(1).clamp(min=1.0)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[:, 0])
        elif mode == "max":
            out.append(hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values)
        elif mode == "mean":
            out.append((hidden * m).sum(1) / lengths)
        elif mode == "mean_sqrt_len":
            out.append((hidden * m).sum(1) / lengths.sqrt())
        elif mode == "weightedmean":
            pos = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
            w = m * pos[None, :, None]
            out.append((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = mask.long().sum(1).clamp(min=1) - 1
            out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}; expected one of {POOLING_MODES}")
    return torch.cat(out, dim=-1)


class TextEncoder:
    """Encodes cue lines and queries with a transformers text model (see the module docstring)."""

    spec_base: str | None = None  # set by the registry: the spec (without options) it was loaded from
    explicit: frozenset[str] = frozenset()  # options given explicitly (recorded in the spec)

    def __init__(self, model: Any, tokenizer: Any, name: str, revision: str, layout: CheckpointLayout,
                 settings: TextEncoderSettings | None = None, dense: Sequence[Dense] = ()):
        self.model = model
        self.tokenizer = tokenizer
        self.revision = revision
        self.layout = layout
        self.dense = list(dense)
        self._base_name = name
        self._settings = settings or TextEncoderSettings()
        hidden = int(model.config.hidden_size)
        if self._settings.per == "tokens":
            self.dim = hidden
        elif self.dense:
            self.dim = int(self.dense[-1].weight.shape[0])
        else:
            self.dim = hidden * len(self._settings.pooling)
        self.name = f"{name}+{self._settings.per}"

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | os.PathLike,
        *,
        per: str = "tokens",
        max_length: int | None = None,
        pooling: str | Sequence[str] | None = None,
        text_batch_size: int = 64,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        family: str = "text",
        label: str | None = None,
    ) -> TextEncoder:
        """Load a text checkpoint: a local folder or a Hugging Face id (fetched into the hub cache, or
        found there offline; see :func:`maxsim.encoders.checkpoint.resolve_checkpoint`).

        ``pooling`` (a mode or modes of :data:`POOLING_MODES`) overrides the checkpoint's; ``max_length``
        its sequence limit. ``revision`` pins a hub commit; for a local folder it is the content
        fingerprint the folder must have (a changed folder is an error, never silently other vectors).
        Defaults: CUDA when available; bfloat16 on a GPU, float32 on the CPU. The encoder is named
        ``family:label@revision+per`` (label: the hub id, else the folder name).
        """
        from transformers import AutoModel, AutoTokenizer

        folder, rev = resolve_checkpoint(id_or_path, revision=revision, local_files_only=local_files_only,
                                         cache_dir=cache_dir, token=token)
        layout = read_layout(folder)
        if not (layout.transformer / "config.json").is_file():
            raise MissingWeightsError(f"{layout.transformer} has no config.json: not a text model folder")
        is_local = Path(str(id_or_path)).expanduser().is_dir()
        if is_local:
            rev = checkpoint_revision(folder, layout)
            if revision is not None and revision != rev:
                raise ValueError(f"text model folder {folder} has content fingerprint {rev}, not the "
                                 f"{revision} asked for (its files changed)")
        dev = default_device(device)
        model, info = AutoModel.from_pretrained(str(layout.transformer), dtype=resolve_dtype(dtype, dev),
                                                **MODEL_LOAD_OPTIONS)
        missing = (str(k) for k in (info.get("missing_keys") or []))
        problems = sorted(k for k in missing if not k.startswith("pooler."))  # the pooler is not used
        problems += sorted(str(k) for k in (info.get("mismatched_keys") or []))
        if problems:
            raise ValueError(f"text checkpoint {layout.transformer} does not match its model: "
                             f"{', '.join(problems[:8])}")
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        model.to(dev).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(layout.transformer), local_files_only=True)
        limit = max_length or layout.max_seq_length or min(int(getattr(tokenizer, "model_max_length", 512)),
                                                            512)
        if isinstance(pooling, str):
            pooling = (pooling,)
        settings = TextEncoderSettings(per=per, max_length=int(limit),
                                       pooling=tuple(pooling or layout.pooling or ("mean",)),
                                       text_batch_size=text_batch_size)
        dense = [_load_dense(d) for d in layout.dense]
        name = f"{family}:{label or (folder.name if is_local else str(id_or_path))}@{rev}"
        return cls(model, tokenizer, name, rev, layout, settings, dense)

    @property
    def settings(self) -> dict[str, Any]:
        """Encoding settings, recorded with an index next to ``name`` and ``dim``."""
        d = asdict(self._settings)
        d["pooling"] = list(self._settings.pooling)
        d["dtype"] = str(self.model.dtype).replace("torch.", "")
        d["dense_layers"] = len(self.dense)
        d["query_prompt"] = self.layout.query_prompt
        d["cue_prompt"] = self.layout.cue_prompt
        d["lowercase"] = self.layout.lowercase
        return d

    @property
    def per(self) -> str:
        """``"tokens"`` (one row per token) or ``"cue"`` (one pooled row per text)."""
        return self._settings.per

    @property
    def spec(self) -> str | None:
        """The spec that loads this encoder again with the same vectors (``minilm(per=cue)``); None when
        it was not loaded from a spec."""
        if self.spec_base is None:
            return None
        s = self._settings
        values = {"per": s.per, "max_length": s.max_length, "pooling": s.pooling}
        keep = {k for k in SPEC_OPTIONS if k in self.explicit} | ({"per"} if s.per != "tokens" else set())
        return join_options(self.spec_base, {k: values[k] for k in SPEC_OPTIONS if k in keep})

    def with_settings(self, **changes: Any) -> TextEncoder:
        """A second encoder on the same loaded model with some settings changed (e.g. ``per="cue"``)."""
        if isinstance(changes.get("pooling"), str):
            changes["pooling"] = (changes["pooling"],)
        enc = TextEncoder(self.model, self.tokenizer, self._base_name, self.revision, self.layout,
                          replace(self._settings, **changes), self.dense)
        enc.spec_base = self.spec_base
        enc.explicit = self.explicit | (set(changes) & set(SPEC_OPTIONS))
        return enc

    # -- encoding ------------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One (rows, dim) float32 CPU tensor per query."""
        return self._encode(texts, self.layout.query_prompt)

    def encode_cues(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """One (rows, dim) float32 CPU tensor per cue line."""
        return self._encode(texts, self.layout.cue_prompt)

    def encode_texts(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Queries, as the visual encoders name it (:meth:`encode_queries`)."""
        return self.encode_queries(texts)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, texts: Sequence[str], prompt: str) -> list[torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("pass a sequence of strings; wrap a single text in a list")
        s = self._settings
        prepared = [prompt + (t.lower() if self.layout.lowercase else t) for t in texts]
        order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i]))  # batch similar lengths
        out: list[torch.Tensor | None] = [None] * len(prepared)
        dev = self._device()
        for b in range(0, len(order), s.text_batch_size):
            idx = order[b:b + s.text_batch_size]
            batch = [prepared[i] for i in idx]
            enc = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt",
                                 max_length=s.max_length, return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()
            with torch.inference_mode():
                hidden = self.model(**{k: v.to(dev) for k, v in enc.items()}).last_hidden_state.float()
            mask = enc["attention_mask"].to(dev)
            if s.per == "cue":
                vec = pool(hidden, mask, s.pooling)
                for layer in self.dense:
                    vec = layer(vec)
                rows = F.normalize(vec, dim=-1).cpu()
                for j, i in enumerate(idx):
                    out[i] = rows[j:j + 1].clone()
                continue
            keep = mask.bool() & ~special.to(dev)
            normed = F.normalize(hidden, dim=-1)
            fallback = F.normalize(pool(hidden, mask, ("mean",)), dim=-1)
            for j, i in enumerate(idx):
                rows = normed[j][keep[j]]
                out[i] = (rows if rows.shape[0] else fallback[j:j + 1]).cpu().clone()
        return [t for t in out if t is not None]
