"""Embedding routes: /embed, /embed_all, /embed_sparse, /similarity and the
OpenAI-compatible /v1/embeddings (also /embeddings)."""

from __future__ import annotations

import base64

import numpy as np

from embedserve.router.errors import input_validation
from embedserve.router.operations import Truncation
from embedserve.router.routes._http import HttpCall, until_disconnected
from embedserve.router.routes._inference import Outcome, call_limits, endpoint, truncation
from embedserve.router.schemas import (
    EmbedAllRequest,
    EmbedRequest,
    EmbedSparseRequest,
    OpenAIEmbeddingsRequest,
    SimilarityParameters,
    SimilarityRequest,
)


async def handle_embed(call: HttpCall, body: EmbedRequest) -> Outcome:
    work = call.state.operations.embed_pooled(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, body.normalize,
        body.dimensions, call_limits(call),
    )
    result = await until_disconnected(call, work)
    return Outcome(result.vectors, result.metadata)


async def handle_embed_all(call: HttpCall, body: EmbedAllRequest) -> Outcome:
    work = call.state.operations.embed_all(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, call_limits(call)
    )
    result = await until_disconnected(call, work)
    return Outcome(result.matrices, result.metadata)


async def handle_embed_sparse(call: HttpCall, body: EmbedSparseRequest) -> Outcome:
    work = call.state.operations.embed_sparse(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, call_limits(call)
    )
    result = await until_disconnected(call, work)
    sparse = [[{"index": i, "value": v} for i, v in weights] for weights in result.weights]
    return Outcome(sparse, result.metadata)


async def handle_similarity(call: HttpCall, body: SimilarityRequest) -> Outcome:
    params = body.parameters or SimilarityParameters()
    work = call.state.operations.similarity(
        body.inputs.source_sentence, body.inputs.sentences, truncation(params.truncate, params.truncation_direction),
        params.prompt_name, call_limits(call),
    )
    result = await until_disconnected(call, work)
    return Outcome(result.scores, result.metadata)


async def handle_openai(call: HttpCall, body: OpenAIEmbeddingsRequest) -> Outcome:
    if body.embedding_type == "multi_vector":
        return await openai_multi_vector(call, body)
    # OpenAI's API has no truncation, prompt or normalize fields: the server's defaults, normalized.
    work = call.state.operations.embed_pooled(
        body.input, Truncation(truncate=None), None, True, body.dimensions, call_limits(call)
    )
    result = await until_disconnected(call, work)
    vectors = result.vectors
    data: list[dict[str, object]]
    if body.encoding_format == "base64":
        data = [{"object": "embedding", "embedding": text, "index": i} for i, text in enumerate(base64_rows(vectors))]
    else:
        data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    return Outcome(openai_list(call, data, result.token_counts), result.metadata)


async def openai_multi_vector(call: HttpCall, body: OpenAIEmbeddingsRequest) -> Outcome:
    """`embedding_type: "multi_vector"` (ours): each item's `embedding` is the input's
    bge-m3 multi-vectors, normalized, a list of vectors each encoded as `encoding_format` says."""
    if body.dimensions is not None:
        raise input_validation("`dimensions` is not available with `embedding_type` multi_vector")
    work = call.state.operations.embed_multi_vector(
        body.input, Truncation(truncate=None), None, True, call_limits(call)
    )
    result = await until_disconnected(call, work)
    data: list[dict[str, object]] = [
        {"object": "embedding", "embedding": base64_rows(m) if body.encoding_format == "base64" else m, "index": i}
        for i, m in enumerate(result.matrices)
    ]
    return Outcome(openai_list(call, data, result.token_counts), result.metadata)


def openai_list(call: HttpCall, data: list[dict[str, object]], token_counts: list[int]) -> dict[str, object]:
    tokens = int(sum(token_counts))
    return {
        "object": "list",
        "data": data,
        "model": call.state.settings.served_model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def base64_rows(vectors: np.ndarray) -> list[str]:
    """Each row's little-endian float32 bytes in base64 (OpenAI's `encoding_format`)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if len(matrix) == 0:
        return []
    row_bytes = matrix.shape[1] * 4
    if row_bytes and row_bytes % 3 == 0:
        # Rows end on whole base64 groups (no padding): encode the matrix once and cut.
        text = base64.b64encode(matrix.data).decode("ascii")
        step = row_bytes // 3 * 4
        return [text[start : start + step] for start in range(0, len(text), step)]
    return [base64.b64encode(row.data).decode("ascii") for row in matrix]


embed = endpoint(EmbedRequest, handle_embed)
embed_all = endpoint(EmbedAllRequest, handle_embed_all)
embed_sparse = endpoint(EmbedSparseRequest, handle_embed_sparse)
similarity = endpoint(SimilarityRequest, handle_similarity)
openai_embeddings = endpoint(OpenAIEmbeddingsRequest, handle_openai, openai_errors=True, span_name="openai_embed")
