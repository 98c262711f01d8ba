"""Request reading and response writing shared by the HTTP routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from router.errors import BodyReadTimeoutError, PayloadTooLargeError, ShuttingDownError, UnsupportedMediaError
from router.state import AppState

T = TypeVar("T")

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.embedserve
    return state


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


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    if isinstance(content, JsonPieces):
        return content.response(status_code, headers)
    return Response(
        orjson.dumps(content, option=JSON_OPTIONS), status_code=status_code, headers=headers, media_type="application/json"
    )


async def read_body(request: Request, state: AppState) -> bytes:
    """The JSON body, within the body read timeout.

    A client that leaves mid-upload is ClientGone (answered quietly, counted as
    dropped); SIGTERM's drain cuts a read short with 503.
    """
    timeout_s = state.settings.body_read_timeout_s
    try:
        async with asyncio.timeout(timeout_s if timeout_s > 0 else None) as limit:
            state.body_reads.add(limit)
            try:
                return await read_json_body(request, state.settings.payload_limit)
            finally:
                state.body_reads.discard(limit)
    except TimeoutError:
        if state.draining:
            raise ShuttingDownError() from None
        raise BodyReadTimeoutError(f"the request body did not arrive within {timeout_s:g}s") from None
    except ClientDisconnect:
        raise ClientGone() from None


async def read_json_body(request: Request, limit: int) -> bytes:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaError("Expected request with `Content-Type: application/json`")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError("Failed to buffer the request body: length limit exceeded")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError("Failed to buffer the request body: length limit exceeded")
        chunks.append(chunk)
    return b"".join(chunks)


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first.

    Cancellation withdraws the request's inputs from the batch queue, so a
    vanished client's inputs never reach a backend.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # abandoned work's outcome has nobody to go to
    raise ClientGone()


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        try:
            message = await request.receive()
        except ClientDisconnect:
            return
        if message["type"] == "http.disconnect":
            return
