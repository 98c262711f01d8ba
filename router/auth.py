"""Bearer-token check for every route except the public ones (TEI's rule)."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = frozenset({"/health", "/ping", "/metrics", "/docs", "/api-doc/openapi.json"})
# Swagger UI's own files, which /docs loads (router/swagger_ui.py).
DOCS_ASSET_PREFIX = "/docs/static/"


def expected_authorization(api_key: str) -> bytes:
    return f"Bearer {api_key}".encode()


def is_authorized(given: bytes, expected: bytes) -> bool:
    """`given`: the request's last Authorization header (b"" if none)."""
    return hmac.compare_digest(given, expected)


class ApiKeyMiddleware:
    """Answers 401 with an empty body unless `Authorization: Bearer <key>` matches.

    Starlette's routes only: router/front.py checks the key itself on its direct routes."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self._app = app
        self._expected = expected_authorization(api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_public(scope):
            await self._app(scope, receive, send)
            return
        if is_authorized(dict(scope["headers"]).get(b"authorization", b""), self._expected):
            await self._app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _is_public(scope: Scope) -> bool:
    path = scope["path"]
    return (path in PUBLIC_PATHS or (path == "/" and scope["method"] == "GET")
            or path.startswith(DOCS_ASSET_PREFIX))
