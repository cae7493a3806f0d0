"""Encoders: turn texts and clips into multi-vectors.

- :mod:`~maxsim.encoders.registry`: lookup by spec (a registered name, a Hugging Face id or local folder,
  ``package.module:attr``), :func:`load_encoder`, :func:`register_encoder`.
- :mod:`~maxsim.encoders.record`: what an index records about its encoder, and the rules every front end
  applies with it (same encoder, same family before loading, the index keeps its token reduction).
- :mod:`~maxsim.encoders.spec`, :mod:`~maxsim.encoders.reduce`, :mod:`~maxsim.encoders.pooled`: token
  reduction at ingest (``"<spec>+pool(...)"``, :class:`PooledEncoder`).
- one module per model family (:mod:`~maxsim.encoders.colqwen3`, :mod:`~maxsim.encoders.colqwen2`,
  :mod:`~maxsim.encoders.qwen3vl_embedding`, :mod:`~maxsim.encoders.clip`; the Qwen3-VL-Reranker in
  :mod:`~maxsim.encoders.qwen3vl_reranker`, what the Qwen3-VL models share in
  :mod:`~maxsim.encoders.qwen3vl`), imported only when used: importing maxsim never imports transformers.
"""

from maxsim.encoders.pooled import PooledEncoder
from maxsim.encoders.record import query_labels
from maxsim.encoders.registry import (
    DEFAULT_ENCODER,
    encoder_family,
    is_registered,
    load_encoder,
    name_family,
    register_encoder,
    register_wrapper,
    registered_encoders,
    unregister_encoder,
)

__all__ = [
    "DEFAULT_ENCODER", "PooledEncoder", "encoder_family", "is_registered", "load_encoder", "name_family",
    "query_labels", "register_encoder", "register_wrapper", "registered_encoders", "unregister_encoder",
]
