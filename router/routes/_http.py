"""Request reading and response writing shared by the HTTP routes.

A route sees its request as an `HttpCall` (the ASGI scope and receive channel,
no Starlette `Request`) and returns an `Answer` (status, headers, body bytes):
router/routes/asgi.py sends it straight to Hypercorn on the hot POST routes, and
`Answer.response()` makes a Starlette response of it everywhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from embedserve.router.errors import (
    BodyReadTimeoutError,
    EmbedServeError,
    PayloadTooLargeError,
    ShuttingDownError,
    UnsupportedMediaError,
)
from embedserve.router.served_model import MODEL_HEADER, ServedModel
from embedserve.router.state import AppState

T = TypeVar("T")

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
JSON_MEDIA_TYPE = b"application/json"

# Not a real status: the client is gone and never reads it (nginx's convention).
CLIENT_CLOSED_REQUEST = 499

RawHeaders = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.embedserve
    return state


# Where router/routes/asgi.py leaves the model a `/models/<name>/` prefix chose.
MODEL_SCOPE_KEY = "embedserve.model"
_MODEL_HEADER_KEY = MODEL_HEADER.encode()


def request_model(request: Request) -> ServedModel:
    """The model a Starlette-routed request chose (path prefix, else x-model, else the default)."""
    return HttpCall.of(request).model


@dataclass(slots=True)
class HttpCall:
    """One HTTP request as the routes read it."""

    state: AppState
    scope: Scope
    receive: Receive
    # perf_counter() time by which the request's inputs must have run, if any.
    deadline: float | None = None
    # The model the request chose, once known (router/served_model.py).
    chosen: ServedModel | None = None

    @classmethod
    def of(cls, request: Request) -> HttpCall:
        return cls(app_state(request), request.scope, request.receive)

    @property
    def model(self) -> ServedModel:
        """The chosen model: by the path prefix, else the x-model header, else the
        default. An unknown name raises ModelNotFoundError (404)."""
        return self.choose_model(None)

    def choose_model(self, body_model: str | None) -> ServedModel:
        """As `model`, with the OpenAI body's `model` field as the last say; that
        field is read only when several models are served (one model answers
        whatever it names, as TEI)."""
        if self.chosen is not None:
            return self.chosen
        models = self.state.models
        chosen = self.scope.get(MODEL_SCOPE_KEY)
        if chosen is None:
            header = self.header(_MODEL_HEADER_KEY)
            if header is not None:
                chosen = models.named(header.strip())
            elif body_model is not None and models.several:
                chosen = models.named(body_model)
            else:
                chosen = models.default
        self.chosen = chosen
        return chosen

    def header(self, name: bytes) -> str | None:
        """The first value of header `name` (lower case), as Starlette's `headers.get`."""
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None


@dataclass(frozen=True)
class JsonPieces:
    """A JSON body already written, in pieces that are sent one by one and never
    joined: a /tokenize answer can be tens of MB, and one copy of it all would hold
    the event loop."""

    pieces: list[bytes]

    @classmethod
    def array(cls, items: list[bytes]) -> JsonPieces:
        pieces = [b"["]
        for index, item in enumerate(items):
            pieces.extend((b",", item) if index else (item,))
        pieces.append(b"]")
        return cls(pieces)

    def response(self, status_code: int, headers: dict[str, str] | None) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for piece in self.pieces:
                yield piece

        # A known length, as TEI sends, rather than chunked encoding.
        length = {"content-length": str(sum(len(piece) for piece in self.pieces))}
        return StreamingResponse(
            body(), status_code=status_code, headers={**(headers or {}), **length}, media_type="application/json"
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer. `headers` are the route's own; content-length and
    content-type follow them, in Starlette's order, when it is sent."""

    status: int
    body: bytes | JsonPieces = b""
    headers: RawHeaders = field(default_factory=list)
    media_type: bytes | None = None

    async def send(self, send: Send, extra_headers: RawHeaders) -> None:
        """Straight to the server: one start message, one body message. The head
        lists what Starlette's `Response` would, in its order, then `extra_headers`.
        A body in pieces goes through `response()` (Starlette streams it, watching
        for the client leaving)."""
        body = self.body
        assert isinstance(body, bytes)
        headers = [*self.headers]
        if self.status >= 200 and self.status not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode()))
        if self.media_type is not None:
            headers.append((b"content-type", self.media_type))
        headers.extend(extra_headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def response(self) -> Response:
        """The same answer as a Starlette response (the routes behind Starlette's stack)."""
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in self.headers}
        media_type = None if self.media_type is None else self.media_type.decode("latin-1")
        if isinstance(self.body, JsonPieces):
            return self.body.response(self.status, headers)
        return Response(self.body, status_code=self.status, headers=headers, media_type=media_type)


CONNECTION_CLOSE: RawHeaders = [(b"connection", b"close")]


def json_answer(content: Any, status: int = 200, headers: RawHeaders | None = None) -> Answer:
    if isinstance(content, JsonPieces):
        return Answer(status, content, headers or [], JSON_MEDIA_TYPE)
    return Answer(status, orjson.dumps(content, option=JSON_OPTIONS), headers or [], JSON_MEDIA_TYPE)


def error_answer(exc: EmbedServeError, *, openai: bool = False) -> Answer:
    """TEI's error body (or OpenAI's, on its routes); a 401 has none, as TEI."""
    if exc.status == 401 and not openai:
        return Answer(401)
    headers = list(CONNECTION_CLOSE) if exc.closes_connection else []
    return json_answer(exc.to_openai_body() if openai else exc.to_body(), exc.status, headers)


def client_gone_answer() -> Answer:
    return Answer(CLIENT_CLOSED_REQUEST)


def unexpected_answer(exc: BaseException) -> Answer:
    """A bug's answer: its type only, never its message (which may quote input)."""
    return json_answer({"error": f"internal error: {type(exc).__name__}", "error_type": "Backend"}, 500)


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(content, JsonPieces):
        return content.response(status_code, headers)
    return Response(
        orjson.dumps(content, option=JSON_OPTIONS), status_code=status_code, headers=headers, media_type="application/json"
    )


async def read_body(call: HttpCall, state: AppState) -> bytes:
    """The JSON body, within the body read timeout.

    A client that leaves mid-upload is ClientGone (answered quietly, counted as
    dropped); SIGTERM's drain cuts a read short with 503.
    """
    timeout_s = state.settings.body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s if timeout_s > 0 else None) as limit:
            state.body_reads.add(limit)
            try:
                return await read_json_body(call, state.settings.payload_limit)
            finally:
                state.body_reads.discard(limit)
    except TimeoutError:
        if state.draining:
            raise ShuttingDownError() from None
        raise BodyReadTimeoutError(f"the request body did not arrive within {timeout_s:g}s") from None


async def read_json_body(call: HttpCall, limit: int) -> bytes:
    media_type = (call.header(b"content-type") or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaError("Expected request with `Content-Type: application/json`")
    declared = call.header(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError("Failed to buffer the request body: length limit exceeded")
    receive = call.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone()  # http.disconnect: the client left mid-upload
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError("Failed to buffer the request body: length limit exceeded")
        chunks.append(chunk)
        if not message.get("more_body", False):
            # Most bodies arrive in one message: no join, no copy.
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def until_disconnected(call: HttpCall, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first.

    Cancellation withdraws the request's inputs from the batch queue, so a
    vanished client's inputs never reach a backend. The work runs in the
    caller's own task; only the watcher of the connection is a task of its own,
    and it cancels the caller's task when the client leaves.
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    def on_watcher_done(watcher: asyncio.Task[None]) -> None:
        nonlocal left
        if not watcher.cancelled() and watcher.exception() is None:
            left = True
            task.cancel()

    watcher = asyncio.ensure_future(_wait_for_disconnect(call.receive))
    watcher.add_done_callback(on_watcher_done)
    try:
        result = await work
    except BaseException:
        # The work ended by our cancellation (or in spite of it): the client left,
        # unless someone else cancelled this task too.
        if left and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        watcher.remove_done_callback(on_watcher_done)
        watcher.cancel()
    if left:  # the work swallowed our cancellation
        if task.uncancel() == 0:
            raise ClientGone()
        raise asyncio.CancelledError()
    return result


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
