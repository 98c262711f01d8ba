"""The ASGI app Hypercorn calls: POSTs to the inference routes go straight to
their endpoint; every other request goes through the Starlette app unchanged.

Why: Starlette's stack (ServerErrorMiddleware, CORSMiddleware, the API key
middleware, ExceptionMiddleware, the router's route scan, `request_response`
with its exception wrapper, `Request` and `Response` objects) wraps every
request in about ten layers of coroutines and `send` wrappers; on the near-free
bench that was a tenth of the router's CPU. For the routes that carry the
traffic, this module does the same work inline and once: the CORS headers that
CORSMiddleware adds to a simple (non-preflight) response, the API key check of
router/auth.py, and the error answers of router/app.py. Preflights (OPTIONS),
other methods (405), /tokenize (a streamed body) and every other path are
Starlette's, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from embedserve.router.auth import expected_authorization, is_authorized
from embedserve.router.routes._http import Answer, HttpCall, RawHeaders, unexpected_answer
from embedserve.router.routes._inference import Endpoint

logger = logging.getLogger(__name__)

_VARY_ORIGIN = (b"vary", b"Origin")
_ALLOW_ANY_ORIGIN = (b"access-control-allow-origin", b"*")


class CorsPolicy:
    """The headers Starlette's CORSMiddleware adds to a simple response, as it is
    configured in router/app.py (no credentials, no exposed headers, no regex)."""

    def __init__(self, allow_origins: Sequence[str]) -> None:
        self._allow_any = "*" in allow_origins
        self._origins = frozenset(allow_origins)

    def headers(self, origin: bytes | None) -> RawHeaders:
        # Starlette answers `Vary: Origin` even to a request without Origin.
        if origin is None:
            return [_VARY_ORIGIN]
        if self._allow_any:
            return [_ALLOW_ANY_ORIGIN, _VARY_ORIGIN]
        if origin.decode("latin-1") in self._origins:
            return [(b"access-control-allow-origin", origin), _VARY_ORIGIN]
        return [_VARY_ORIGIN]


_UNAUTHORIZED = Answer(401)


class FrontApp:
    def __init__(
        self, starlette: Starlette, direct: Mapping[str, Endpoint[Any]], cors: CorsPolicy, api_key: str | None
    ) -> None:
        self._starlette = starlette
        self._direct = dict(direct)
        self._cors = cors
        self._expected_authorization = None if api_key is None else expected_authorization(api_key)

    @property
    def state(self) -> State:
        return self._starlette.state

    @property
    def routes(self) -> list[BaseRoute]:
        return self._starlette.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._direct.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self._starlette(scope, receive, send)
            return
        # One pass over the headers: Starlette reads the first Origin, the API key
        # middleware the last Authorization.
        origin: bytes | None = None
        authorization = b""
        for name, value in scope["headers"]:
            if name == b"origin":
                if origin is None:
                    origin = value
            elif name == b"authorization":
                authorization = value
        cors = self._cors.headers(origin)
        expected = self._expected_authorization
        if expected is not None and not is_authorized(authorization, expected):
            await _UNAUTHORIZED.send(send, cors)
            return
        try:
            answer = await endpoint.answer(HttpCall(self._starlette.state.embedserve, scope, receive))
        except Exception as exc:
            logger.error("unhandled error on %s", scope["path"], exc_info=exc)
            answer = unexpected_answer(exc)
        await answer.send(send, cors)
