"""The API key: where a request may carry it, and the dependencies that check it."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
BEARER = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")
KEY_QUERY = APIKeyQuery(
    name="api_key", auto_error=False, description="the API key, for <video>/<img> sources"
)


def key_checks(api_key: str | None) -> tuple[Callable[..., None], Callable[..., None]]:
    """The dependencies that require ``api_key``: one for API routes (``X-API-Key`` header or bearer
    token) and one for media routes (also ``?api_key=``, because ``<video>`` and ``<img>`` cannot send
    headers). Without a key both accept everything."""

    def check(supplied: str | None) -> None:
        if api_key is None:
            return
        if supplied is None or not hmac.compare_digest(supplied.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send it in an X-API-Key header",
                {"WWW-Authenticate": "Bearer"},
            )

    def require_key(
        header: Annotated[str | None, Depends(KEY_HEADER)],
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        check(header or (token.credentials if token else None))

    def require_key_media(
        header: Annotated[str | None, Depends(KEY_HEADER)],
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        query: Annotated[str | None, Depends(KEY_QUERY)],
    ) -> None:
        check(header or (token.credentials if token else None) or query)

    return require_key, require_key_media
