"""The OpenAPI document of every route (/api-doc/openapi.json) and the /docs page.

Request schemas come from the msgspec structs the routes decode with, so the
document cannot drift from what the server accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from embedserve.router import schemas


class ErrorResponse(msgspec.Struct):
    error: str
    error_type: str


class OpenAIErrorResponse(msgspec.Struct):
    message: str
    code: int
    type: str


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    summary: str
    request: type[Any] | None = None
    public: bool = False
    openai_errors: bool = False


OPERATIONS = (
    Operation("/embed", "post", "Pooled embeddings", schemas.EmbedRequest),
    Operation("/embed_all", "post", "One embedding per token", schemas.EmbedAllRequest),
    Operation("/embed_sparse", "post", "SPLADE sparse embeddings", schemas.EmbedSparseRequest),
    Operation("/embed_multi_vector", "post", "bge-m3 multi-vector (ColBERT) embeddings, one list of vectors per input",
              schemas.EmbedMultiVectorRequest),
    Operation("/embed_hybrid", "post", "bge-m3 dense, sparse and multi-vector embeddings from one forward pass",
              schemas.EmbedHybridRequest),
    Operation("/predict", "post", "Sequence classification", schemas.PredictRequest),
    Operation("/rerank", "post", "Rerank texts against a query", schemas.RerankRequest),
    Operation("/v1/rerank", "post", "Jina/Cohere-compatible rerank", schemas.V1RerankRequest, openai_errors=True),
    Operation("/similarity", "post", "Cosine similarity to a source sentence", schemas.SimilarityRequest),
    Operation("/tokenize", "post", "Tokenize", schemas.TokenizeRequest),
    Operation("/decode", "post", "Decode token ids", schemas.DecodeRequest),
    Operation("/v1/embeddings", "post", "OpenAI-compatible embeddings", schemas.OpenAIEmbeddingsRequest,
              openai_errors=True),
    Operation("/embeddings", "post", "OpenAI-compatible embeddings (alias)", schemas.OpenAIEmbeddingsRequest,
              openai_errors=True),
    Operation("/vertex", "post", "Google Vertex AI wrapper", schemas.VertexRequest),
    Operation("/", "post", "The model type's default route"),
    Operation("/invocations", "post", "The model type's default route (SageMaker)"),
    Operation("/info", "get", "Model and router information"),
    Operation("/health", "get", "Health", public=True),
    Operation("/", "get", "Health", public=True),
    Operation("/ping", "get", "Health", public=True),
    Operation("/metrics", "get", "Prometheus metrics", public=True),
    # Several models (README "Several models"): every route also answers under
    # /models/{name}/..., or for the model an `x-model` header names.
    Operation("/v1/models", "get", "The served models (OpenAI list)"),
    Operation("/v1/models/{name}", "get", "One served model (OpenAI); 404 if none has that name",
              openai_errors=True),
)

ERROR_STATUSES = {
    "400": "Empty input or malformed JSON",
    "401": "Missing or wrong API key",
    "413": "Payload too large",
    "415": "Content type is not application/json",
    "422": "Validation or tokenizer error",
    "424": "Backend error, or a route the model type does not serve",
    "429": "Model is overloaded",
    "503": "Unhealthy",
}


def build_openapi(version: str) -> dict[str, Any]:
    request_types = sorted({op.request for op in OPERATIONS if op.request is not None}, key=lambda t: t.__name__)
    (refs, components) = msgspec.json.schema_components(
        [*request_types, ErrorResponse, OpenAIErrorResponse], ref_template="#/components/schemas/{name}"
    )
    ref_of = dict(zip([*request_types, ErrorResponse, OpenAIErrorResponse], refs))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        error_ref = ref_of[OpenAIErrorResponse if op.openai_errors else ErrorResponse]
        responses: dict[str, Any] = {"200": {"description": "Success"}}
        if op.method == "post" or not op.public:
            for status, description in ERROR_STATUSES.items():
                responses[status] = {"description": description, "content": {"application/json": {"schema": error_ref}}}
        operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
        if op.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref_of[op.request]}},
            }
        elif op.method == "post":
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {}}}}
        if not op.public:
            operation["security"] = [{"bearer": []}]
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "embedserve", "version": version,
                 "description": "Text embeddings, rerankers and classifiers with TEI's API"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
