"""Embedding routes: /embed, /embed_all, /embed_sparse, /similarity and the
OpenAI-compatible /v1/embeddings (also /embeddings)."""

from __future__ import annotations

from embedserve.router.errors import input_validation
from embedserve.router.operations import Truncation
from embedserve.router.quantize import QUANTIZED, Precision, base64_rows, check_ranges, quantize
from embedserve.router.routes._http import HttpCall, until_disconnected
from embedserve.router.routes._inference import Outcome, call_limits, endpoint, truncation
from embedserve.router.served_model import ServedModel
from embedserve.router.schemas import (
    EmbedAllRequest,
    EmbedRequest,
    EmbedSparseRequest,
    OpenAIEmbeddingsRequest,
    SimilarityParameters,
    SimilarityRequest,
)


async def handle_embed(call: HttpCall, body: EmbedRequest) -> Outcome:
    ranges = check_ranges(body.ranges, body.precision)
    work = call.model.operations.embed_pooled(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, body.normalize,
        body.dimensions, call_limits(call),
    )
    result = await until_disconnected(call, work)
    return Outcome(quantize(result.vectors, body.precision, ranges), result.metadata)


async def handle_embed_all(call: HttpCall, body: EmbedAllRequest) -> Outcome:
    work = call.model.operations.embed_all(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, call_limits(call)
    )
    result = await until_disconnected(call, work)
    return Outcome(result.matrices, result.metadata)


async def handle_embed_sparse(call: HttpCall, body: EmbedSparseRequest) -> Outcome:
    work = call.model.operations.embed_sparse(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, call_limits(call)
    )
    result = await until_disconnected(call, work)
    sparse = [[{"index": i, "value": v} for i, v in weights] for weights in result.weights]
    return Outcome(sparse, result.metadata)


async def handle_similarity(call: HttpCall, body: SimilarityRequest) -> Outcome:
    params = body.parameters or SimilarityParameters()
    work = call.model.operations.similarity(
        body.inputs.source_sentence, body.inputs.sentences, truncation(params.truncate, params.truncation_direction),
        params.prompt_name, call_limits(call),
    )
    result = await until_disconnected(call, work)
    return Outcome(result.scores, result.metadata)


async def handle_openai(call: HttpCall, body: OpenAIEmbeddingsRequest) -> Outcome:
    if body.embedding_type == "multi_vector":
        return await openai_multi_vector(call, body)
    model = call.choose_model(body.model)
    precision = openai_precision(body)
    ranges = check_ranges(body.ranges, precision)
    # OpenAI's API has no truncation, prompt or normalize fields: the server's defaults, normalized.
    work = model.operations.embed_pooled(
        body.input, Truncation(truncate=None), None, True, body.dimensions, call_limits(call)
    )
    result = await until_disconnected(call, work)
    vectors = quantize(result.vectors, precision, ranges)
    data: list[dict[str, object]]
    if body.encoding_format == "base64":
        data = [{"object": "embedding", "embedding": text, "index": i} for i, text in enumerate(base64_rows(vectors))]
    else:
        data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    return Outcome(openai_list(model, data, result.token_counts), result.metadata)


async def openai_multi_vector(call: HttpCall, body: OpenAIEmbeddingsRequest) -> Outcome:
    """`embedding_type: "multi_vector"` (ours): each item's `embedding` is the input's
    bge-m3 multi-vectors, normalized, a list of vectors each encoded as `encoding_format` says."""
    if body.dimensions is not None:
        raise input_validation("`dimensions` is not available with `embedding_type` multi_vector")
    model = call.choose_model(body.model)
    work = model.operations.embed_multi_vector(
        body.input, Truncation(truncate=None), None, True, call_limits(call)
    )
    result = await until_disconnected(call, work)
    data: list[dict[str, object]] = [
        {"object": "embedding", "embedding": base64_rows(m) if body.encoding_format == "base64" else m, "index": i}
        for i, m in enumerate(result.matrices)
    ]
    return Outcome(openai_list(model, data, result.token_counts), result.metadata)


def openai_list(model: ServedModel, data: list[dict[str, object]], token_counts: list[int]) -> dict[str, object]:
    tokens = int(sum(token_counts))
    return {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def openai_precision(body: OpenAIEmbeddingsRequest) -> Precision:
    """A quantized `encoding_format` names the precision itself; `precision` says it
    for base64 (raw bytes) and float (JSON lists); the two must not disagree."""
    if body.encoding_format in QUANTIZED:
        named: Precision = body.encoding_format
        if body.precision not in (None, named):
            raise input_validation(f"`precision` {body.precision!r} contradicts `encoding_format` {named!r}")
        return named
    return body.precision or "float32"


embed = endpoint(EmbedRequest, handle_embed)
embed_all = endpoint(EmbedAllRequest, handle_embed_all)
embed_sparse = endpoint(EmbedSparseRequest, handle_embed_sparse)
similarity = endpoint(SimilarityRequest, handle_similarity)
openai_embeddings = endpoint(OpenAIEmbeddingsRequest, handle_openai, openai_errors=True, span_name="openai_embed")
