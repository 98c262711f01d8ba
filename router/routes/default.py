"""POST / and /invocations (the model type's own route) and the /vertex wrapper."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from embedserve.router.errors import EmbedServeError, ValidationError
from embedserve.router.routes import embed, predict
from embedserve.router.routes._http import Answer, HttpCall, error_answer, request_model
from embedserve.router.routes._inference import Endpoint, Outcome, endpoint
from embedserve.router.schemas import (
    EmbedRequest,
    EmbedSparseRequest,
    PredictRequest,
    RerankRequest,
    VertexRequest,
)
from embedserve.router.settings import RouterSettings


def default_route(settings: RouterSettings) -> Endpoint[Any]:
    """TEI's choice: classifier → predict, reranker → rerank, else similarity
    (TASK=sentence-similarity), embed_sparse (SPLADE) or embed."""
    if settings.model_type == "classifier":
        return predict.predict
    if settings.model_type == "reranker":
        return predict.rerank
    if settings.task == "sentence-similarity":
        return embed.similarity
    if settings.is_splade:
        return embed.embed_sparse
    return embed.embed


async def invocations(request: Request) -> Response:
    return await default_route(request_model(request).settings).starlette(request)


class ModelDefaultRoute:
    """POST / and /invocations on the direct path: the chosen model's own route
    (each served model may be of another type)."""

    async def answer(self, call: HttpCall) -> Answer:
        try:
            model = call.model
        except EmbedServeError as exc:
            call.state.metrics.request_failure.inc(err=exc.metric_label)
            return error_answer(exc)
        return await default_route(model.settings).answer(call)

    async def starlette(self, request: Request) -> Response:
        return (await self.answer(HttpCall.of(request))).response()


model_default = ModelDefaultRoute()


def _convert(instance: dict[str, Any], schema: type[Any]) -> Any:
    try:
        return msgspec.convert(instance, schema)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"Failed to deserialize the instance: {exc}") from exc


async def handle_vertex(call: HttpCall, body: VertexRequest) -> Outcome:
    """Each instance is a rerank request if it parses as one, else the model type's request."""
    settings = call.model.settings
    predictions = []
    for instance in body.instances:
        try:
            rerank_body = msgspec.convert(instance, RerankRequest)
        except msgspec.ValidationError:
            rerank_body = None
        if rerank_body is not None:
            outcome = await predict.handle_rerank(call, rerank_body)
        elif settings.model_type in ("classifier", "reranker"):
            outcome = await predict.handle_predict(call, _convert(instance, PredictRequest))
        elif settings.is_splade:
            outcome = await embed.handle_embed_sparse(call, _convert(instance, EmbedSparseRequest))
        else:
            outcome = await embed.handle_embed(call, _convert(instance, EmbedRequest))
        predictions.append(outcome.content)
    return Outcome({"predictions": predictions})


vertex = endpoint(VertexRequest, handle_vertex, span_name="vertex_compatibility")
