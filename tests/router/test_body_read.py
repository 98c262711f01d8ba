"""read_body on its own: the body read timeout, a client leaving mid-upload, and
SIGTERM's drain cutting a read short. A hand-fed ASGI receive stands in for Hypercorn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from embedserve.router.errors import BodyReadTimeoutError, ShuttingDownError
from embedserve.router.metrics import Metrics
from embedserve.router.routes._http import ClientGone, HttpCall, read_body
from embedserve.router.settings import RouterSettings
from embedserve.router.state import AppState


def _state(body_read_timeout_s: float) -> AppState:
    settings = RouterSettings(
        model_id="m", served_model_name="m", backend_sockets=(), tokenizer_sockets=(),
        body_read_timeout_s=body_read_timeout_s,
    )
    # read_body reads only the settings, `draining` and `body_reads`.
    return AppState(settings, Metrics(512), None, [], None, None, None, None)  # type: ignore[arg-type]


def _request(*messages: dict[str, Any]) -> HttpCall:
    """A request whose receive yields `messages`, then waits forever (a stalled client)."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    scope = {"type": "http", "method": "POST", "path": "/embed", "headers": [(b"content-type", b"application/json")]}
    return HttpCall(None, scope, receive)  # type: ignore[arg-type]  # read_body is given the state


def _chunk(data: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


def test_a_complete_body_is_read() -> None:
    state = _state(5.0)
    body = asyncio.run(read_body(_request(_chunk(b'{"inputs":', True), _chunk(b' "a"}', False)), state))
    assert body == b'{"inputs": "a"}'
    assert state.body_reads == set()


def test_a_stalled_body_times_out() -> None:
    state = _state(0.05)
    with pytest.raises(BodyReadTimeoutError) as caught:
        asyncio.run(read_body(_request(_chunk(b'{"inputs":', True)), state))
    assert (caught.value.status, caught.value.error_type, caught.value.closes_connection) == (408, "Timeout", True)
    assert caught.value.metric_label == "body_timeout"
    assert state.body_reads == set()


def test_a_client_leaving_mid_upload_is_client_gone() -> None:
    state = _state(5.0)
    with pytest.raises(ClientGone):
        asyncio.run(read_body(_request(_chunk(b'{"inputs":', True), {"type": "http.disconnect"}), state))


@pytest.mark.parametrize("body_read_timeout_s", [60.0, 0.0])
def test_the_drain_cuts_a_read_short(body_read_timeout_s: float) -> None:
    state = _state(body_read_timeout_s)

    async def read_then_drain() -> None:
        read = asyncio.ensure_future(read_body(_request(_chunk(b'{"inputs":', True)), state))
        await asyncio.sleep(0.01)
        assert len(state.body_reads) == 1 and not read.done()
        state.begin_drain()
        await asyncio.wait_for(read, 5)

    with pytest.raises(ShuttingDownError):
        asyncio.run(read_then_drain())
    assert state.body_reads == set()
