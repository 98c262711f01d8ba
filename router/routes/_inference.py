"""The shape every inference route shares: decode the body, call one operation
(router/operations.py), count, answer with TEI's x-* headers.

A route is an `Endpoint`: a schema and a `handler(call, body) -> Outcome`.
`Endpoint.answer` serves it on router/front.py's direct path; `Endpoint.starlette`
is the same behind Starlette's routing. /vertex calls the handlers directly.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from embedserve.proto import tracing
from embedserve.router.errors import EmbedServeError, ShuttingDownError, ValidationError
from embedserve.router.infer import ResponseMetadata
from embedserve.router.infer import CallLimits
from embedserve.router.lanes import PRIORITY_HEADER, parse_priority
from embedserve.router.metrics import Metrics
from embedserve.router.operations import Truncation
from embedserve.router.routes._http import (
    Answer,
    ClientGone,
    HttpCall,
    RawHeaders,
    client_gone_answer,
    error_answer,
    json_answer,
    read_body,
)
from embedserve.router.schemas import decode_body
from embedserve.router.state import AppState

B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class Outcome:
    content: Any
    metadata: ResponseMetadata | None = None


Handler = Callable[[HttpCall, B], Awaitable[Outcome]]


@dataclass(frozen=True)
class Endpoint(Generic[B]):
    schema: type[B]
    handler: Handler[B]
    # The OpenAI-compatible routes answer errors in OpenAI's shape.
    openai_errors: bool = False
    # The request span's name: TEI's handler name (proto/tracing).
    span_name: str = ""

    async def answer(self, call: HttpCall) -> Answer:
        """Every outcome, errors included, as an answer; only a bug raises."""
        tracer = tracing.active()
        if tracer is None:
            return await self._answer(call)
        parent = call.header(_TRACEPARENT_KEY)
        with tracer.request(self.span_name, parent, call.header(_TRACESTATE_KEY) if parent else None) as span:
            answer = await self._answer(call)
            tracer.answered(span, answer.status)
            return answer

    async def _answer(self, call: HttpCall) -> Answer:
        state = call.state
        started = time.perf_counter()
        try:
            if state.draining:
                raise ShuttingDownError()
            call.deadline = _deadline(call, state, started)
            raw = await read_body(call, state)
            # In flight only now: SIGTERM's drain waits for requests it can answer,
            # not for uploads that may never complete.
            state.request_started()
            try:
                if state.draining:
                    raise ShuttingDownError()
                outcome = await self.handler(call, decode_body(raw, self.schema))
            finally:
                state.request_finished()
        except EmbedServeError as exc:
            _metrics(call).request_failure.inc(err=exc.metric_label)
            return error_answer(exc, openai=self.openai_errors)
        except ClientGone:
            # Once per request, however many inputs it had (TEI counts requests).
            _metrics(call).request_failure.inc(err="dropped")
            return client_gone_answer()
        headers: RawHeaders = []
        if outcome.metadata is not None:
            headers = [(key.encode(), value.encode()) for key, value in outcome.metadata.headers().items()]
            _metrics(call).request_duration.observe(time.perf_counter() - started)
        return json_answer(outcome.content, headers=headers)

    async def starlette(self, request: Request) -> Response:
        return (await self.answer(HttpCall.of(request))).response()


def _metrics(call: HttpCall) -> Metrics:
    """The chosen model's metrics; the default model's if none was chosen (yet)."""
    return (call.chosen or call.state.models.default).metrics


def endpoint(schema: type[B], handler: Handler[B], *, openai_errors: bool = False, span_name: str = "") -> Endpoint[B]:
    """`span_name` defaults to the handler's name without `handle_` (TEI's names: embed, rerank, ...)."""
    return Endpoint(schema, handler, openai_errors, span_name or handler.__name__.removeprefix("handle_"))


_TRACEPARENT_KEY = tracing.TRACEPARENT.encode()
_TRACESTATE_KEY = tracing.TRACESTATE.encode()


# ------------------------------------------------------------------ shared steps


def truncation(truncate: bool | None, direction: str) -> Truncation:
    """TEI's HTTP fields: `truncate` may be absent (the server's default); the
    direction is accepted in either case."""
    return Truncation(truncate, "left" if direction.lower() == "left" else "right")


def call_limits(call: HttpCall) -> CallLimits:
    """HTTP calls fail fast with 429, end at the request's deadline, if any, and
    queue in the lane their x-priority header asks for (422 if it is neither
    `high` nor `low`)."""
    return CallLimits(wait_for_permit=False, deadline=call.deadline, priority=parse_priority(call.header(_PRIORITY_KEY)))


_PRIORITY_KEY = PRIORITY_HEADER.encode()


DEADLINE_HEADER = "x-request-timeout-ms"
_DEADLINE_HEADER_KEY = DEADLINE_HEADER.encode()


def _deadline(call: HttpCall, state: AppState, started: float) -> float | None:
    """perf_counter() time by which the request's inputs must have run, if any."""
    header = call.header(_DEADLINE_HEADER_KEY)
    if header is None:
        timeout_ms = state.settings.default_request_timeout_ms
        return started + timeout_ms / 1000 if timeout_ms > 0 else None
    if not header.strip().isdigit() or int(header) <= 0:
        raise ValidationError(f"`{DEADLINE_HEADER}` must be a positive number of milliseconds, got {header!r}")
    return started + int(header) / 1000
