"""Refuses request bodies larger than a limit with 413, before the application sees them (a larger limit
for the routes that take pictures)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


async def _send_413(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"request body larger than the server's limit of {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: a declared Content-Length over ``max_bytes`` is refused at once; otherwise the
    body is read (chunked bodies included) up to the limit and refused as soon as it passes it, and the
    application gets the buffered body. Bodies here are small JSON documents, so buffering costs little;
    ``larger`` maps a path to its own limit (the search routes that take an image, up to a few MB).
    """

    def __init__(self, app: Any, max_bytes: int, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.larger = {str(k): int(v) for k, v in (larger or {}).items()}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _send_413(send, limit)
                    return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await _send_413(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
