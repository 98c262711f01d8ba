"""Bearer-token check for every route except the public ones (TEI's rule)."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/health", "/ping", "/metrics", "/docs", "/api-doc/openapi.json"})


class ApiKeyMiddleware:
    """Answers 401 with an empty body unless `Authorization: Bearer <key>` matches."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self._app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_public(scope):
            await self._app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self._app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _is_public(scope: Scope) -> bool:
    path = scope["path"]
    return path in PUBLIC_PATHS or (path == "/" and scope["method"] == "GET")
