"""POST /embed and the OpenAI-compatible POST /v1/embeddings (and /embeddings)."""

from __future__ import annotations

import base64
import time

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from router.errors import EmbedServeError, ModelTypeError, input_validation
from router.infer import EncodeOptions, InferenceResult
from router.routes._http import app_state, json_response, read_json_body, until_disconnected
from router.schemas import (
    EmbedRequest,
    OpenAIEmbeddingsRequest,
    check_batch_size,
    check_dimensions,
    decode_body,
    parse_inputs,
)
from router.state import AppState
from router.vectors import finish_embeddings
from tokenizer_pool.pool import Input


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


async def _embed(request: Request, state: AppState, inputs: list[Input], options: EncodeOptions) -> InferenceResult:
    if state.settings.pooling == "splade" or state.facts.hidden_size == 0:
        raise ModelTypeError("Backend error: Model is not an embedding model")
    metrics = state.metrics
    metrics.embed_count.inc(len(inputs))
    result = await until_disconnected(request, state.inference.run(inputs, options))
    metrics.embed_success.inc(len(inputs))
    meta = result.metadata
    for _ in inputs:
        metrics.embed_duration.observe(meta.total_time_s)
        metrics.embed_tokenization_duration.observe(meta.tokenization_time_s)
        metrics.embed_queue_duration.observe(meta.queue_time_s)
        metrics.embed_inference_duration.observe(meta.inference_time_s)
    return result


def _observe_request(state: AppState, method: str, result: InferenceResult, started: float) -> None:
    metrics = state.metrics
    metrics.request_success.inc(method=method)
    metrics.request_duration.observe(time.perf_counter() - started)
    metrics.request_tokenization_duration.observe(result.metadata.tokenization_time_s)
    metrics.request_queue_duration.observe(result.metadata.queue_time_s)
    metrics.request_inference_duration.observe(result.metadata.inference_time_s)


async def embed(request: Request) -> Response:
    state = app_state(request)
    started = time.perf_counter()
    body = decode_body(await read_json_body(request, state.settings.payload_limit), EmbedRequest)
    inputs, is_batch = parse_inputs(body.inputs)
    method = "batch" if is_batch else "single"
    state.metrics.request_count.inc(method=method)
    try:
        check_batch_size(len(inputs), state.settings.max_client_batch_size)
        check_dimensions(body.dimensions, state.facts.hidden_size)
        options = EncodeOptions(
            truncate=state.settings.auto_truncate if body.truncate is None else body.truncate,
            direction="left" if body.truncation_direction.lower() == "left" else "right",
            prompt=resolve_prompt(state, body.prompt_name),
        )
        result = await _embed(request, state, inputs, options)
    except EmbedServeError as exc:
        state.metrics.request_failure.inc(err=exc.metric_label)
        raise
    vectors = finish_embeddings(result.rows, body.normalize, body.dimensions)
    _observe_request(state, method, result, started)
    return json_response(vectors, headers=result.metadata.headers())


async def openai_embeddings(request: Request) -> Response:
    state = app_state(request)
    started = time.perf_counter()
    try:
        body = decode_body(await read_json_body(request, state.settings.payload_limit), OpenAIEmbeddingsRequest)
        inputs, is_batch = parse_inputs(body.input)
    except EmbedServeError as exc:
        return json_response(exc.to_openai_body(), status_code=exc.status)
    method = "batch" if is_batch else "single"
    state.metrics.request_count.inc(method=method)
    try:
        check_batch_size(len(inputs), state.settings.max_client_batch_size)
        check_dimensions(body.dimensions, state.facts.hidden_size)
        options = EncodeOptions(truncate=state.settings.auto_truncate, prompt=state.settings.default_prompt)
        result = await _embed(request, state, inputs, options)
    except EmbedServeError as exc:
        state.metrics.request_failure.inc(err=exc.metric_label)
        return json_response(exc.to_openai_body(), status_code=exc.status)
    vectors = finish_embeddings(result.rows, True, body.dimensions)
    if body.encoding_format == "base64":
        data = [
            {"object": "embedding", "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii"), "index": i}
            for i, v in enumerate(vectors)
        ]
    else:
        data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    tokens = int(np.sum(result.token_counts))
    _observe_request(state, method, result, started)
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": state.settings.served_model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        headers=result.metadata.headers(),
    )
