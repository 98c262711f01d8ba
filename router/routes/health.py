"""GET /health (and / and /ping), GET /info, GET /metrics, GET /api-doc/openapi.json."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from embedserve.router.openapi import build_openapi

from embedserve.router.errors import BackendUnavailableError
from embedserve.router.routes._http import MODEL_SCOPE_KEY, app_state, json_response, request_model
from embedserve.router.served_model import MODEL_HEADER
from embedserve.router.settings import RouterSettings
from embedserve.router.version import VERSION


async def health(request: Request) -> Response:
    """200 once the tokenizer pool and a backend of the chosen model answer; with
    no model chosen (no prefix, no x-model), of every served model."""
    state = app_state(request)
    if state.draining:
        raise BackendUnavailableError("unhealthy")
    explicit = MODEL_SCOPE_KEY in request.scope or MODEL_HEADER in request.headers
    models = [request_model(request)] if explicit else list(state.models)
    for model in models:
        backends_ok = await asyncio.gather(*(backend.health() for backend in model.backends))
        if not any(backends_ok):
            raise BackendUnavailableError("unhealthy")
    if not await state.tokenizers.health():
        raise BackendUnavailableError("unhealthy")
    return Response(status_code=200)


async def info(request: Request) -> Response:
    """TEI's /info of the chosen model (the default one unless a prefix or x-model names another)."""
    model = request_model(request)
    settings = model.settings
    facts = model.facts
    return json_response(
        {
            "model_id": settings.model_id,
            "model_sha": settings.revision,
            "model_dtype": facts.dtype,
            "served_model_name": settings.served_model_name,
            "model_type": _model_type(settings),
            "max_concurrent_requests": settings.max_concurrent_requests,
            "max_input_length": settings.max_input_length,
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_requests": model.queue.max_batch_requests,
            "max_client_batch_size": settings.max_client_batch_size,
            "auto_truncate": settings.auto_truncate,
            "tokenization_workers": settings.tokenization_workers,
            "version": VERSION,
            "sha": None,
            "docker_label": None,
            "backend": facts.backend,
        }
    )


async def openapi(request: Request) -> Response:
    document = request.app.state.openapi_document
    if document is None:
        document = request.app.state.openapi_document = build_openapi(VERSION)
    return json_response(document)


def _model_type(settings: RouterSettings) -> dict[str, object]:
    if settings.model_type == "embedding":
        return {"embedding": {"pooling": settings.pooling}}
    labels = {"id2label": settings.id2label, "label2id": settings.label2id}
    return {settings.model_type: labels}


async def metrics(request: Request) -> Response:
    return Response(await app_state(request).render_metrics(), media_type="text/plain; version=0.0.4")
