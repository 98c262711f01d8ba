"""Embedding routes: /embed, /embed_all, /embed_sparse, /similarity and the
OpenAI-compatible /v1/embeddings (also /embeddings)."""

from __future__ import annotations

import base64

from starlette.requests import Request

from router.operations import Truncation
from router.routes._http import until_disconnected
from router.routes._inference import Outcome, call_limits, endpoint, truncation
from router.schemas import (
    EmbedAllRequest,
    EmbedRequest,
    EmbedSparseRequest,
    OpenAIEmbeddingsRequest,
    SimilarityParameters,
    SimilarityRequest,
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
    params = body.parameters or SimilarityParameters()
    work = state.operations.similarity(
        body.inputs.source_sentence, body.inputs.sentences, truncation(params.truncate, params.truncation_direction),
        params.prompt_name, call_limits(request),
    )
    result = await until_disconnected(request, work)
    return Outcome(result.scores, result.metadata)


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
