"""What an index records about its encoder, and the rules every front end applies with it.

An index records the encoder's ``name`` (``family:checkpoint@revision``, ending in ``+pool(...)`` when
tokens are reduced), ``dim``, its ``settings`` and, when it was loaded from a spec, that ``spec`` and the hub
``revision`` it was loaded at. The optional members an encoder may have (``settings``, ``revision``,
``spec``, ``frame_size``; see :class:`~maxsim.types.EncoderExtras`) are read here and nowhere else.

Rules: an encoder of another name or dim than the index's is refused (:func:`check_encoder`), and one of
another family before it is even loaded (:func:`check_spec`); settings that only change speed (device,
dtype, batch sizes) are left out of what decides whether a video must be re-encoded
(:func:`vector_settings`); an index keeps the token reduction it was built with
(:func:`with_index_reduction`, :func:`reduction_conflict`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maxsim.encoders.registry import encoder_family, name_family
from maxsim.encoders.spec import NO_REDUCTION, pool_suffix, reduction_of
from maxsim.errors import EncoderMismatchError
from maxsim.types import Clip, Encoder, FrameSize, TokenGrid

_HUB_COMMIT = re.compile(r"^[0-9a-f]{40}$")

# Encoder settings that change how fast vectors are computed, not which vectors come out (within float
# noise): left out of the settings key, so that opening an index on another device or with other batch
# sizes does not re-ingest it.
RUNTIME_ENCODER_SETTINGS = frozenset({"dtype", "device", "batch_tokens", "text_batch_size"})


def encoder_settings(encoder: Encoder) -> dict[str, Any]:
    """The encoder's ``settings`` (recorded in the index), or ``{}`` when it declares none."""
    return dict(getattr(encoder, "settings", None) or {})


def encoder_token_grid(encoder: object, clip: Clip, n_tokens: int) -> TokenGrid | None:
    """How the ``n_tokens`` vectors ``encoder`` made of ``clip`` lie on its frames (its ``token_grid``
    member), or None when it has none, says None, or declares a grid those tokens cannot fill (a grid is
    recorded only when it accounts for every token: evidence never invents positions)."""
    method = getattr(encoder, "token_grid", None)
    if method is None:
        return None
    grid = method(clip, int(n_tokens))
    if grid is None:
        return None
    if not isinstance(grid, TokenGrid):
        name = getattr(encoder, "name", type(encoder).__name__)
        raise TypeError(f"encoder {name!r}: token_grid() returned "
                        f"{type(grid).__name__}; expected maxsim.types.TokenGrid or None")
    return grid if grid.fits(n_tokens, len(clip.timestamps)) else None


def encoder_token_labels(encoder: object, text: str, n_tokens: int) -> list[str] | None:
    """A label per query token of ``text`` (the encoder's ``token_labels``), or None when it has none or
    its labels do not match the ``n_tokens`` query vectors."""
    method = getattr(encoder, "token_labels", None)
    if method is None:
        return None
    labels = [str(x) for x in method(text)]
    return labels if len(labels) == n_tokens else None


def query_labels(encoder: object, texts: Sequence[str], vectors: Sequence[Any]) -> list[list[str] | None]:
    """:func:`encoder_token_labels` of each text, given its query vectors (for their count)."""
    return [encoder_token_labels(encoder, t, len(v)) for t, v in zip(texts, vectors, strict=True)]


def encoder_frame_size(encoder: object, n_frames: int) -> FrameSize | None:
    """The largest frames ``encoder`` can use for a clip of ``n_frames`` frames (its ``frame_size``
    member; also read from rerankers), or None when it has none or no preference. Raises TypeError naming
    the encoder when it returns something else than a :class:`~maxsim.types.FrameSize` or None."""
    method = getattr(encoder, "frame_size", None)
    if method is None:
        return None
    size = method(int(n_frames))
    if size is not None and not isinstance(size, FrameSize):
        raise TypeError(
            f"encoder {getattr(encoder, 'name', type(encoder).__name__)!r}: frame_size() returned "
            f"{type(size).__name__}; expected maxsim.types.FrameSize or None"
        )
    return size


def encoder_spec(encoder: Encoder) -> str | None:
    """The spec that loads this encoder again (its ``spec`` member), or None."""
    spec = getattr(encoder, "spec", None)
    return spec if isinstance(spec, str) else None


def encoder_revision(encoder: Encoder) -> str | None:
    """The hub commit an encoder's checkpoint was loaded at (``encoder.revision``, else the 40-hex
    ``@<commit>`` that ends its name); None for local folders (their name holds a content fingerprint)."""
    rev = getattr(encoder, "revision", None)
    if isinstance(rev, str) and _HUB_COMMIT.match(rev):
        return rev
    name = str(encoder.name)
    name = name.split("+pool(", 1)[0]
    _, at, tail = name.rpartition("@")
    return tail if at and _HUB_COMMIT.match(tail) else None


def vector_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Encoder settings without the runtime ones, at every level (a PooledEncoder nests its inner's)."""
    return {k: vector_settings(v) if isinstance(v, Mapping) else v
            for k, v in settings.items() if k not in RUNTIME_ENCODER_SETTINGS}


def encoder_identity(encoder: Encoder) -> dict[str, Any]:
    """What two encoders must share to write the same vectors: name, dim and vector settings."""
    return {"name": str(encoder.name), "dim": int(encoder.dim),
            "settings": vector_settings(encoder_settings(encoder))}


def encoder_record(encoder: Encoder, spec: str | None) -> dict[str, Any]:
    """The ``encoder`` entry of a new index's manifest."""
    rec: dict[str, Any] = {"name": encoder.name, "dim": int(encoder.dim)}
    if spec is not None:
        rec["spec"] = spec
        rev = encoder_revision(encoder)
        if rev is not None:  # reloading the spec must not follow the hub to a newer commit
            rec["revision"] = rev
    settings = encoder_settings(encoder)
    if settings:
        rec["settings"] = settings
    return rec


def load_args(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The spec and ``load_encoder`` kwargs that reload a recorded encoder (pinned at its revision); None
    when the record has no spec (an encoder object was given when the index was made)."""
    spec = record.get("spec")
    if spec is None:
        return None
    rev = record.get("revision")
    return str(spec), ({"revision": rev} if rev else {})


def check_encoder(record: Mapping[str, Any], dim: int, encoder: Encoder, where: str | Path) -> None:
    """Refuse an encoder whose name or dim differs from what the index at ``where`` records."""
    if record.get("name") != encoder.name or int(dim) != int(encoder.dim):
        raise EncoderMismatchError(
            f"{where} was built with encoder {record.get('name')!r} (dim {dim}); "
            f"the encoder given is {encoder.name!r} (dim {encoder.dim}). Open it with the same "
            "encoder, or build a new index."
        )


def check_spec(record: Mapping[str, Any], spec: str, where: str | Path) -> None:
    """Refuse, without loading it, a spec whose encoder family differs from the index's."""
    recorded = str(record.get("name", ""))
    given, have = encoder_family(spec), name_family(recorded)
    if given is not None and have and given != have:
        raise EncoderMismatchError(
            f"{where} was built with encoder {recorded!r}; the encoder given, {spec!r}, is a "
            f"{given} encoder. Open the index without an encoder to use its own, or build a new index "
            "for this one."
        )


def with_index_reduction(spec: str | None, recorded_name: str | None) -> str | None:
    """An encoder spec given for an existing index, wrapped in the index's token reduction when the index
    records one and the spec has none: the reduction belongs to the index, like its dtype."""
    if spec is None or "+pool(" in spec or recorded_name is None:
        return spec
    recorded = reduction_of(recorded_name)
    return spec if recorded is None else spec + pool_suffix(**recorded)


def reduction_conflict(given: Mapping[str, Any], recorded_name: str) -> dict[str, Any] | None:
    """The reduction an existing index was built with when ``given`` (some of ``factor``, ``dedup``,
    ``window``) asks for another, else None: an index keeps the reduction it was built with."""
    have = reduction_of(recorded_name) or NO_REDUCTION
    return dict(have) if any(v != have[k] for k, v in given.items()) else None
