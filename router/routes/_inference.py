"""The shape every inference route shares: decode the body, check the model type,
run, count, answer with TEI's x-* headers.

A route is a `handler(request, state, body) -> Outcome`; `endpoint()` wraps it
into a Starlette endpoint. /vertex calls the handlers directly.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from router.errors import EmbedServeError, ModelTypeError, input_validation
from router.infer import EncodeOptions, InferenceResult, ResponseMetadata
from router.routes._http import app_state, json_response, read_json_body, until_disconnected
from router.schemas import decode_body
from router.state import AppState
from tokenizer_pool.pool import Input

B = TypeVar("B")
Method = Literal["single", "batch"]


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


# ------------------------------------------------------------------ model-type gates


def require_embedding(state: AppState) -> None:
    if state.settings.model_type != "embedding":
        raise ModelTypeError("Backend error: Model is not an embedding model")


def require_classifier(state: AppState) -> None:
    if state.settings.model_type not in ("classifier", "reranker"):
        raise ModelTypeError("Backend error: Model is not a classifier model")


def require_reranker(state: AppState) -> None:
    if state.settings.model_type != "reranker":
        raise ModelTypeError("Backend error: model is not a re-ranker model")


# ------------------------------------------------------------------ shared steps


def resolve_prompt(state: AppState, prompt_name: str | None) -> str | None:
    settings = state.settings
    if prompt_name is None:
        return settings.default_prompt
    if prompt_name not in settings.prompts:
        available = ", ".join(sorted(settings.prompts)) or "none"
        raise input_validation(
            f"`prompt_name` is set to `{prompt_name}` but this prompt does not exist. Available prompts: {available}"
        )
    return settings.prompts[prompt_name]


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
    family: Literal["embed", "predict"],
    raw: bool = False,
) -> InferenceResult:
    """Run inputs through the pool and queue, cancelled if the client goes away."""
    metrics = state.metrics
    metrics.request_count.inc(method=method)
    count = metrics.embed_count if family == "embed" else metrics.predict_count
    count.inc(len(inputs))
    result = await until_disconnected(request, state.inference.run(inputs, options, raw=raw))
    meta = result.metadata
    success = metrics.embed_success if family == "embed" else metrics.predict_success
    success.inc(len(inputs))
    metrics.request_success.inc(method=method)
    metrics.request_tokenization_duration.observe(meta.tokenization_time_s)
    metrics.request_queue_duration.observe(meta.queue_time_s)
    metrics.request_inference_duration.observe(meta.inference_time_s)
    durations = metrics.embed_durations if family == "embed" else metrics.predict_durations
    for _ in inputs:
        durations.observe(meta)
    return result
