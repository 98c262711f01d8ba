"""Embedding routes: /embed, /embed_all, /embed_sparse, /similarity and the
OpenAI-compatible /v1/embeddings (also /embeddings)."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request

from router.errors import EmptyInputError
from router.model_ops import require_embedding, resolve_prompt
from router.operations import Truncation
from router.routes._http import until_disconnected
from router.routes._inference import Outcome, call_limits, encode_options, endpoint, run_inputs, truncation
from router.schemas import (
    EmbedAllRequest,
    EmbedRequest,
    EmbedSparseRequest,
    OpenAIEmbeddingsRequest,
    SimilarityRequest,
    check_batch_size,
)
from router.state import AppState


async def handle_embed(request: Request, state: AppState, body: EmbedRequest) -> Outcome:
    work = state.operations.embed_pooled(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, body.normalize,
        body.dimensions, call_limits(request),
    )
    result = await until_disconnected(request, work)
    return Outcome(result.vectors, result.metadata)


async def handle_embed_all(request: Request, state: AppState, body: EmbedAllRequest) -> Outcome:
    work = state.operations.embed_all(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, call_limits(request)
    )
    result = await until_disconnected(request, work)
    return Outcome(result.matrices, result.metadata)


async def handle_embed_sparse(request: Request, state: AppState, body: EmbedSparseRequest) -> Outcome:
    work = state.operations.embed_sparse(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, call_limits(request)
    )
    result = await until_disconnected(request, work)
    sparse = [[{"index": i, "value": v} for i, v in weights] for weights in result.weights]
    return Outcome(sparse, result.metadata)


async def handle_similarity(request: Request, state: AppState, body: SimilarityRequest) -> Outcome:
    require_embedding(state.settings)
    sentences = body.inputs.sentences
    if not sentences:
        raise EmptyInputError("`inputs.sentences` cannot be empty")
    check_batch_size(len(sentences) + 1, state.settings.max_client_batch_size)
    params = body.parameters
    options = encode_options(
        state,
        params.truncate if params else None,
        params.truncation_direction if params else "right",
        resolve_prompt(state.settings, params.prompt_name if params else None),
    )
    if not body.inputs.source_sentence or not all(sentences):
        raise EmptyInputError("Input validation error: `inputs` cannot be empty")
    texts: list[str | list[int]] = [body.inputs.source_sentence, *sentences]
    result = await run_inputs(request, state, list(texts), options, "batch", "embed")
    vectors = np.stack(result.rows).astype(np.float64)
    source, others = vectors[0], vectors[1:]
    denominators = np.linalg.norm(others, axis=1) * np.linalg.norm(source)
    denominators[denominators == 0] = 1.0
    return Outcome((others @ source / denominators).astype(np.float32), result.metadata)


async def handle_openai(request: Request, state: AppState, body: OpenAIEmbeddingsRequest) -> Outcome:
    # OpenAI's API has no truncation, prompt or normalize fields: the server's defaults, normalized.
    work = state.operations.embed_pooled(
        body.input, Truncation(truncate=None), None, True, body.dimensions, call_limits(request)
    )
    result = await until_disconnected(request, work)
    vectors = result.vectors
    data: list[dict[str, object]]
    if body.encoding_format == "base64":
        data = [
            {"object": "embedding", "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii"), "index": i}
            for i, v in enumerate(vectors)
        ]
    else:
        data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    tokens = int(sum(result.token_counts))
    content = {
        "object": "list",
        "data": data,
        "model": state.settings.served_model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Outcome(content, result.metadata)


embed = endpoint(EmbedRequest, handle_embed)
embed_all = endpoint(EmbedAllRequest, handle_embed_all)
embed_sparse = endpoint(EmbedSparseRequest, handle_embed_sparse)
similarity = endpoint(SimilarityRequest, handle_similarity)
openai_embeddings = endpoint(OpenAIEmbeddingsRequest, handle_openai, openai_errors=True)
