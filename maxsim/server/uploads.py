"""Images sent to the search routes: base64 in a JSON body, or a file in a multipart/form-data body, each
with a size limit (413 beyond it, naming the limit). Multipart bodies are parsed with the standard library's
MIME parser (no extra dependency); the body itself was already bounded by
:class:`~maxsim.server.limits.BodySizeLimit`."""

from __future__ import annotations

import base64
import binascii
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from fastapi import HTTPException

from maxsim.server import schemas as S

_DATA_URI = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
# form fields of POST /search/image besides the image (SearchRequest's single-query fields)
FORM_FIELDS = ("text", "k", "like", "include_self", "include_thumbnails", "mode", "videos", "group", "margin")


def too_large(size: int, limit: int) -> HTTPException:
    return HTTPException(413, f"image of {size} bytes is larger than this server's limit of {limit} bytes")


def decode_image(text: str, max_bytes: int) -> bytes:
    """The bytes of a base64 image (plain or a ``data:`` URI): 400 for text that is not base64, 413 for an
    image over ``max_bytes`` (checked on the text's length before decoding it)."""
    text = _DATA_URI.sub("", text.strip(), count=1)
    if len(text) > 4 * (max_bytes // 3 + 1) + 4:
        raise too_large(len(text) * 3 // 4, max_bytes)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "image: not base64 (send the file's bytes base64-encoded, or a "
                                 "data:image/...;base64, URI)") from None
    if not data:
        raise HTTPException(400, "image: empty")
    if len(data) > max_bytes:
        raise too_large(len(data), max_bytes)
    return data


def read_image_form(content_type: str, body: bytes, max_bytes: int) -> tuple[dict[str, Any], bytes | None]:
    """The fields (strings; ``videos`` repeatable) and the ``image`` file of a multipart/form-data body:
    415 for another content type, 400 for a body that is not multipart, 422 for an unknown field, 413 for an
    image over ``max_bytes``."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"send multipart/form-data with an `image` file, or JSON with a base64 "
                                 f"`image`, not {content_type or 'no'} content type")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    msg = BytesParser(policy=HTTP).parsebytes(head + body)
    if not msg.is_multipart() or msg.defects:
        raise HTTPException(400, "not a well-formed multipart/form-data body")
    fields: dict[str, Any] = {}
    image = None
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "image":
            if len(payload) > max_bytes:
                raise too_large(len(payload), max_bytes)
            image = payload or None
        elif name == "videos":
            fields.setdefault("videos", []).append(payload.decode("utf-8", "replace"))
        elif name in FORM_FIELDS:
            fields[name] = payload.decode("utf-8", "replace")
        else:
            raise HTTPException(422, f"unknown form field {name!r}: expected image and some of "
                                     f"{', '.join(FORM_FIELDS)}")
    return fields, image


def image_form() -> dict[str, Any]:
    """The OpenAPI request body of POST /search/image."""
    props: dict[str, Any] = {
        "image": {"type": "string", "format": "binary", "description": "the picture (PNG, JPEG, WebP...)"},
        "text": {"type": "string", "minLength": 1, "maxLength": S.MAX_TEXT_CHARS,
                 "description": "text searched together with the image"},
        "k": {"type": "integer", "minimum": 1, "maximum": S.MAX_K, "default": 10},
        "like": {"type": "integer", "minimum": 0, "maximum": 2**53, "description": "a hit's segment_id"},
        "include_self": {"type": "boolean", "default": False},
        "include_thumbnails": {"type": "boolean", "default": False},
        "mode": {"type": "string", "enum": ["exact", "pruned"]},
        "group": {"type": "string", "enum": ["segments", "moments", "video"], "default": "segments"},
        "margin": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
        "videos": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                   "maxItems": S.MAX_VIDEO_FILTER},
    }
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": schema},
        "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
    }}}
