"""The shape every inference route shares: decode the body, call one operation
(router/operations.py), count, answer with TEI's x-* headers.

A route is a `handler(request, state, body) -> Outcome`; `endpoint()` wraps it
into a Starlette endpoint. /vertex calls the handlers directly.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from router.errors import EmbedServeError, ShuttingDownError, ValidationError
from router.infer import ResponseMetadata
from router.operations import CallLimits, Truncation
from router.routes._http import ClientGone, app_state, json_response, read_body
from router.schemas import decode_body
from router.state import AppState

B = TypeVar("B")


@dataclass(frozen=True)
class Outcome:
    content: Any
    metadata: ResponseMetadata | None = None


Handler = Callable[[Request, AppState, B], Awaitable[Outcome]]


def endpoint(schema: type[B], handler: Handler[B], *, openai_errors: bool = False) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        state = app_state(request)
        started = time.perf_counter()
        try:
            if state.draining:
                raise ShuttingDownError()
            request.state.deadline = _deadline(request, state, started)
            raw = await read_body(request, state)
            # In flight only now: SIGTERM's drain waits for requests it can answer,
            # not for uploads that may never complete.
            state.request_started()
            try:
                if state.draining:
                    raise ShuttingDownError()
                outcome = await handler(request, state, decode_body(raw, schema))
            finally:
                state.request_finished()
        except EmbedServeError as exc:
            state.metrics.request_failure.inc(err=exc.metric_label)
            if openai_errors:
                headers = {"connection": "close"} if exc.closes_connection else None
                return json_response(exc.to_openai_body(), status_code=exc.status, headers=headers)
            raise
        except ClientGone:
            # Once per request, however many inputs it had (TEI counts requests).
            state.metrics.request_failure.inc(err="dropped")
            raise
        headers = None
        if outcome.metadata is not None:
            headers = outcome.metadata.headers()
            state.metrics.request_duration.observe(time.perf_counter() - started)
        return json_response(outcome.content, headers=headers)

    return serve


# ------------------------------------------------------------------ shared steps


def truncation(truncate: bool | None, direction: str) -> Truncation:
    """TEI's HTTP fields: `truncate` may be absent (the server's default); the
    direction is accepted in either case."""
    return Truncation(truncate, "left" if direction.lower() == "left" else "right")


def call_limits(request: Request) -> CallLimits:
    """HTTP calls fail fast with 429 and end at the request's deadline, if any."""
    return CallLimits(wait_for_permit=False, deadline=getattr(request.state, "deadline", None))


DEADLINE_HEADER = "x-request-timeout-ms"


def _deadline(request: Request, state: AppState, started: float) -> float | None:
    """perf_counter() time by which the request's inputs must have run, if any."""
    header = request.headers.get(DEADLINE_HEADER)
    if header is None:
        timeout_ms = state.settings.default_request_timeout_ms
        return started + timeout_ms / 1000 if timeout_ms > 0 else None
    if not header.strip().isdigit() or int(header) <= 0:
        raise ValidationError(f"`{DEADLINE_HEADER}` must be a positive number of milliseconds, got {header!r}")
    return started + int(header) / 1000
