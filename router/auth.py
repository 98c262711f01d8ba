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

    def __init__(self, app: ASGIApp, api_key: str, public_get_paths: frozenset[str] = frozenset()) -> None:
        self._app = app
        self._expected = expected_authorization(api_key)
        # More health routes (Vertex AI's AIP_HEALTH_ROUTE), open to GET as /health is.
        self._public_get_paths = public_get_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_public(scope, self._public_get_paths):
            await self._app(scope, receive, send)
            return
        if is_authorized(dict(scope["headers"]).get(b"authorization", b""), self._expected):
            await self._app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def _is_public(scope: Scope, public_get_paths: frozenset[str]) -> bool:
    path = scope["path"]
    return (path in PUBLIC_PATHS or path.startswith(DOCS_ASSET_PREFIX)
            or (scope["method"] == "GET" and (path == "/" or path in public_get_paths)))
