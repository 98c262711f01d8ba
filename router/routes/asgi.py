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
from typing import Protocol

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from embedserve.router.auth import expected_authorization, is_authorized
from embedserve.router.errors import ModelNotFoundError
from embedserve.router.routes._http import (
    MODEL_SCOPE_KEY,
    Answer,
    HttpCall,
    RawHeaders,
    error_answer,
    unexpected_answer,
)
from embedserve.router.served_model import PATH_PREFIX

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


class DirectRoute(Protocol):
    """A POST route served on the direct path (an `Endpoint`, or the default route
    that picks the chosen model's)."""

    async def answer(self, call: HttpCall) -> Answer: ...

    async def starlette(self, request: Request) -> Response: ...


# OpenAI's routes answer an unknown model in OpenAI's shape.
_OPENAI_PATHS = ("/v1/embeddings", "/embeddings")


class FrontApp:
    def __init__(
        self, starlette: Starlette, direct: Mapping[str, DirectRoute], cors: CorsPolicy, api_key: str | None
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
        if scope["type"] == "http" and scope["path"].startswith(PATH_PREFIX):
            chosen = self._strip_model_prefix(scope)
            if isinstance(chosen, Answer):
                await chosen.send(send, self._cors.headers(_first_header(scope, b"origin")))
                return
            scope = chosen
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

    def _strip_model_prefix(self, scope: Scope) -> Scope | Answer:
        """`/models/<name>/<route>`: `<route>` for that model (kept in the scope).
        An unknown name is a 404 (after the API key check: names are not public)."""
        path = scope["path"]
        try:
            split = self._starlette.state.embedserve.models.split_path(path)
        except ModelNotFoundError as exc:
            expected = self._expected_authorization
            if expected is not None and not is_authorized(_last_header(scope, b"authorization"), expected):
                return _UNAUTHORIZED
            return error_answer(exc, openai=path.endswith(_OPENAI_PATHS))
        except AttributeError:  # not started yet: Starlette answers as for any path
            return scope
        assert split is not None
        model, route = split
        return {**scope, "path": route, "raw_path": route.encode(), MODEL_SCOPE_KEY: model}


def _first_header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _last_header(scope: Scope, name: bytes) -> bytes:
    found = b""
    for key, value in scope["headers"]:
        if key == name:
            found = value
    return bytes(found)
