"""Embedding routes: /embed, /embed_all, /embed_sparse, /similarity and the
OpenAI-compatible /v1/embeddings (also /embeddings)."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request

from router.errors import EmptyInputError
from router.infer import EncodeOptions
from router.model_ops import (
    require_dense,
    require_embedding,
    require_splade,
    require_token_embeddings,
    resolve_prompt,
    sparse_entries,
)
from router.routes._inference import Outcome, encode_options, endpoint, run_inputs
from router.schemas import (
    EmbedAllRequest,
    EmbedRequest,
    EmbedSparseRequest,
    OpenAIEmbeddingsRequest,
    SimilarityRequest,
    check_batch_size,
    check_dimensions,
    parse_inputs,
)
from router.state import AppState
from router.vectors import finish_embeddings


async def handle_embed(request: Request, state: AppState, body: EmbedRequest) -> Outcome:
    require_dense(state.settings, body.normalize)
    inputs, is_batch = parse_inputs(body.inputs)
    check_batch_size(len(inputs), state.settings.max_client_batch_size)
    check_dimensions(body.dimensions, state.facts.hidden_size)
    options = encode_options(state, body.truncate, body.truncation_direction, resolve_prompt(state.settings, body.prompt_name))
    result = await run_inputs(request, state, inputs, options, "batch" if is_batch else "single", "embed")
    return Outcome(finish_embeddings(result.rows, body.normalize, body.dimensions), result.metadata)


async def handle_embed_all(request: Request, state: AppState, body: EmbedAllRequest) -> Outcome:
    require_token_embeddings(state.settings)
    inputs, is_batch = parse_inputs(body.inputs)
    check_batch_size(len(inputs), state.settings.max_client_batch_size)
    options = encode_options(state, body.truncate, body.truncation_direction, resolve_prompt(state.settings, body.prompt_name))
    result = await run_inputs(request, state, inputs, options, "batch" if is_batch else "single", "embed", raw=True)
    return Outcome(result.rows, result.metadata)


async def handle_embed_sparse(request: Request, state: AppState, body: EmbedSparseRequest) -> Outcome:
    require_splade(state.settings)
    inputs, is_batch = parse_inputs(body.inputs)
    check_batch_size(len(inputs), state.settings.max_client_batch_size)
    options = encode_options(state, body.truncate, body.truncation_direction, resolve_prompt(state.settings, body.prompt_name))
    result = await run_inputs(request, state, inputs, options, "batch" if is_batch else "single", "embed")
    sparse = [[{"index": i, "value": v} for i, v in sparse_entries(row)] for row in result.rows]
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
    require_dense(state.settings, normalize=True)
    inputs, is_batch = parse_inputs(body.input)
    check_batch_size(len(inputs), state.settings.max_client_batch_size)
    check_dimensions(body.dimensions, state.facts.hidden_size)
    options = EncodeOptions(truncate=state.settings.auto_truncate, prompt=state.settings.default_prompt)
    result = await run_inputs(request, state, inputs, options, "batch" if is_batch else "single", "embed")
    vectors = finish_embeddings(result.rows, True, body.dimensions)
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
