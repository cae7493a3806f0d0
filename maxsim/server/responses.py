"""JSON responses that cannot fail to be written, whatever a request or a file name holds.

- :class:`SafeJSONResponse`: a path that is not valid Unicode (a file name whose bytes are not UTF-8,
  which Python holds as surrogate escapes such as ``\\udcff``) is written as a ``\\u`` escape instead of
  failing the response; clients get the same string back (``json.loads``) and can send it again.
- :func:`validation_error`: a body that fails validation is a 422 naming each field, echoing the
  offending input only when it is plain JSON (never NaN, an infinity or a lone surrogate, which no JSON
  encoder writes), and without logging a traceback.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

MAX_ECHO_CHARS = 1000  # a longer input is not echoed back


class SafeJSONResponse(JSONResponse):
    """A JSON response that writes strings holding surrogate escapes as ``\\u`` escapes."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON any encoder writes: no NaN or infinity, no lone surrogate, not huge."""
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        if len(value) > MAX_ECHO_CHARS:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if depth > 8:
        return False
    if isinstance(value, list | tuple):
        return len(value) <= 100 and all(plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 100 and all(isinstance(k, str) and plain(k) and plain(v, depth + 1)
                                         for k, v in value.items())
    return False


def describe_error(err: dict[str, Any]) -> dict[str, Any]:
    """One validation error as JSON: type, location and message, and the input when it is plain."""
    out: dict[str, Any] = {
        "type": str(err.get("type", "")),
        "loc": [x if isinstance(x, int) else str(x) for x in err.get("loc", ())],
        "msg": str(err.get("msg", "")),
    }
    if "input" in err and plain(err["input"]):
        out["input"] = err["input"]
    return out


async def validation_error(_request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    """422 for a body, path or query that does not match the schema (each field named)."""
    return SafeJSONResponse({"detail": [describe_error(e) for e in exc.errors()]}, status_code=422)


async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
    """The ``{"detail": ...}`` body of an HTTP error, written safely."""
    headers = getattr(exc, "headers", None)
    if exc.status_code < 200 or exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=headers)
    return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
