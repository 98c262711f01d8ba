"""The shape every inference route shares: decode the body, check the model type,
run, count, answer with TEI's x-* headers.

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

from router.errors import EmbedServeError
from router.infer import EncodeOptions, Family, InferenceResult, Method, ResponseMetadata
from router.routes._http import app_state, json_response, read_json_body, until_disconnected
from router.schemas import decode_body
from router.state import AppState
from tokenizer_pool.pool import Input

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
            body = decode_body(await read_json_body(request, state.settings.payload_limit), schema)
            outcome = await handler(request, state, body)
        except EmbedServeError as exc:
            state.metrics.request_failure.inc(err=exc.metric_label)
            if openai_errors:
                headers = {"connection": "close"} if exc.status in (413, 415) else None
                return json_response(exc.to_openai_body(), status_code=exc.status, headers=headers)
            raise
        headers = None
        if outcome.metadata is not None:
            headers = outcome.metadata.headers()
            state.metrics.request_duration.observe(time.perf_counter() - started)
        return json_response(outcome.content, headers=headers)

    return serve


# ------------------------------------------------------------------ shared steps


def encode_options(state: AppState, truncate: bool | None, direction: str, prompt: str | None) -> EncodeOptions:
    return EncodeOptions(
        truncate=state.settings.auto_truncate if truncate is None else truncate,
        direction="left" if direction.lower() == "left" else "right",
        prompt=prompt,
    )


async def run_inputs(
    request: Request,
    state: AppState,
    inputs: list[Input],
    options: EncodeOptions,
    method: Method,
    family: Family,
    raw: bool = False,
) -> InferenceResult:
    """Run inputs through the pool and queue, cancelled if the client goes away."""
    return await until_disconnected(request, state.inference.run(inputs, options, raw=raw, family=family, method=method))
