"""The Starlette application: routes, error mapping, and the lifespan that
connects to the tokenizer pool and the backends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from embedserve.router import swagger_ui
from embedserve.router.auth import ApiKeyMiddleware
from embedserve.router.backend_client import BackendClient
from embedserve.router.batch_queue import BatchQueue
from embedserve.router.dispatcher import Kind
from embedserve.router.errors import EmbedServeError
from embedserve.router.grpc_api.server import GrpcFrontend
from embedserve.router.infer import Inference
from embedserve.router.metrics import Metrics
from embedserve.router.operations import Operations
from embedserve.router.queue_handle import QueueHandle
from embedserve.router.multi_output import ModelHeads
from embedserve.router.queue_owner import InprocQueueHandle, QueueOwner
from embedserve.router.remote_queue import RemoteQueueHandle
from embedserve.router.rerank_template import causal_prompt
from embedserve.router.routes import default, embed, health, models, multi_vector, predict, rerank_v1, tokenize
from embedserve.router.routes._http import ClientGone, client_gone_answer, error_answer, unexpected_answer
from embedserve.router.routes.asgi import CorsPolicy, DirectRoute, FrontApp
from embedserve.router.settings import RouterSettings
from embedserve.router.served_model import MODEL_HEADER, ModelRegistry, ServedModel
from embedserve.router.state import AppState, BackendFacts
from embedserve.tokenizer_pool.pool import TokenizerPool

logger = logging.getLogger(__name__)


async def connect_backends(settings: RouterSettings) -> tuple[list[BackendClient], BackendFacts, int | None]:
    """The backends, what they agree on, and the batch size limit of the queue."""
    backends = [BackendClient(path, f"backend-{i}") for i, path in enumerate(settings.backend_sockets)]
    infos = await asyncio.gather(*(backend.info() for backend in backends))
    first = infos[0]
    for backend, other in zip(backends, infos):
        if (other.hidden_size, other.is_padded, other.reranker_template, other.reranker_instruction, other.sparse_head,
                other.colbert_dim) != (first.hidden_size, first.is_padded, first.reranker_template,
                                       first.reranker_instruction, first.sparse_head, first.colbert_dim):
            raise RuntimeError(f"{backend.name} disagrees with backend-0 on hidden size, padding, reranker template "
                               "or bge-m3 heads")
    limits = [i.max_batch_size for i in infos if i.max_batch_size] + (
        [settings.max_batch_requests] if settings.max_batch_requests else []
    )
    facts = BackendFacts(
        hidden_size=first.hidden_size,
        dtype=first.dtype,
        backend=first.backend,
        is_padded=first.is_padded,
        max_batch_size=first.max_batch_size or None,
        reranker_template=first.reranker_template,
        reranker_instruction=first.reranker_instruction,
        heads=ModelHeads(first.sparse_head, first.colbert_dim),
    )
    return backends, facts, min(limits) if limits else None


def build_queue_owner(
    settings: RouterSettings, backends: list[BackendClient], facts: BackendFacts, max_batch_requests: int | None,
    metrics: Metrics,
) -> QueueOwner:
    queue = BatchQueue(
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_requests=max_batch_requests,
        padded=facts.is_padded,
        position_offset=settings.position_offset,
        metrics=metrics,
    )
    kind: Kind = "embed" if settings.model_type == "embedding" else "predict"
    return QueueOwner(queue, backends, metrics, kind, lanes=settings.lane_policy.enabled)


async def connect_services(settings: RouterSettings, on_owner_lost: Callable[[], None] | None = None) -> AppState:
    """Every served model's backends, queue and operations, on one tokenizer pool."""
    views = settings.model_views()
    all_metrics = [Metrics(view.max_input_length) for view in views]
    tokenizers = TokenizerPool(list(settings.tokenizer_sockets), [view.max_input_length for view in views])
    link: RemoteQueueHandle | None = None
    if settings.owner_socket:
        link = await RemoteQueueHandle.connect(
            settings.owner_socket, settings.front_index, all_metrics, on_lost=on_owner_lost
        )
    models = []
    for index, (view, metrics) in enumerate(zip(views, all_metrics)):
        # A front keeps its own backend connections for /health and /info; with a
        # queue owner process (--router-workers >= 2) only the owner sends batches.
        backends, facts, max_batch_requests = await connect_backends(view)
        handle: QueueHandle
        if link is not None:
            handle = link.model(index)
        else:
            owner = build_queue_owner(view, backends, facts, max_batch_requests, metrics)
            handle = InprocQueueHandle(owner, view.max_concurrent_requests)
        inference = Inference(tokenizers.model(index), handle, metrics, view.lane_policy)
        operations = Operations(view, facts.hidden_size, inference,
                                causal_prompt(facts.reranker_template, facts.reranker_instruction), facts.heads)
        models.append(ServedModel(index, view.served_model_name, view, metrics, backends, facts, handle, inference,
                                  operations))
    first = models[0]
    return AppState(settings, first.metrics, tokenizers, first.backends, first.facts, first.queue, first.inference,
                    first.operations, models=ModelRegistry(models), owner_link=link)


async def start_queues(state: AppState) -> None:
    for model in state.models:
        await model.queue.start()


async def close_services(state: AppState) -> None:
    for model in state.models:
        await model.queue.close()
    await state.tokenizers.close()
    await asyncio.gather(*(backend.close() for model in state.models for backend in model.backends))


async def _embedserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmbedServeError)  # registered for this class only
    return error_answer(exc).response()


async def _client_gone(request: Request, exc: Exception) -> Response:
    return client_gone_answer().response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return unexpected_answer(exc).response()


async def _root(request: Request) -> Response:
    # GET / is a health check; POST / is the model type's default route.
    if request.method == "GET":
        return await health.health(request)
    return await default.invocations(request)


def vertex_routes(settings: RouterSettings) -> list[Route]:
    """Vertex AI's own paths (AIP_PREDICT_ROUTE, AIP_HEALTH_ROUTE; TEI's `google`
    build, router/src/http/server.rs), listed before the built-in routes: a path
    Vertex names answers as Vertex means it, even one that is also a built-in path."""
    predict_path, health_path = settings.vertex_predict_route, settings.vertex_health_route
    if predict_path is not None and predict_path == health_path:

        async def health_or_predict(request: Request) -> Response:
            if request.method == "GET":
                return await health.health(request)
            return await default.vertex.starlette(request)

        return [Route(predict_path, health_or_predict, methods=["GET", "POST"])]
    routes = []
    if predict_path is not None:
        routes.append(Route(predict_path, default.vertex.starlette, methods=["POST"]))
    if health_path is not None:
        routes.append(Route(health_path, health.health, methods=["GET"]))
    return routes


def create_app(settings: RouterSettings, on_owner_lost: Callable[[], None] | None = None) -> FrontApp:
    """`on_owner_lost`: called once if the link to the queue owner process drops
    (--router-workers >= 2); the server then stops and exits non-zero."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        def owner_lost() -> None:
            # New requests and /health get 503 at once; in-flight ones already
            # failed (RemoteQueueHandle); then the process stops, non-zero.
            current = getattr(app.state, "embedserve", None)
            if current is not None:
                current.begin_drain()
            if on_owner_lost is not None:
                on_owner_lost()

        state = await connect_services(settings, owner_lost)
        await start_queues(state)
        app.state.embedserve = state
        app.state.openapi_document = None
        grpc_frontend = None
        if settings.grpc_port:
            grpc_frontend = GrpcFrontend(state)
            await grpc_frontend.start()
            state.on_drain.append(lambda: grpc_frontend.begin_drain(settings.graceful_timeout_s))
        for model in state.models:
            logger.info(
                "router ready: model %s, %d backend(s), %d tokenizer worker(s), padded=%s, max_batch_tokens=%d",
                model.name,
                len(model.backends),
                state.tokenizers.size,
                model.facts.is_padded,
                model.settings.max_batch_tokens,
            )
        if state.owner_link is not None:
            state.owner_link.announce_ready()
        try:
            yield
        finally:
            if grpc_frontend is not None:
                await grpc_frontend.stop(settings.graceful_timeout_s)
            await close_services(state)

    # POSTs to these paths skip Starlette's stack (router/routes/asgi.py); the
    # Route entries below still answer their other methods (405) and preflights.
    direct: dict[str, DirectRoute] = {
        "/embed": embed.embed,
        "/embed_all": embed.embed_all,
        "/embed_sparse": embed.embed_sparse,
        "/embed_multi_vector": multi_vector.embed_multi_vector,
        "/embed_hybrid": multi_vector.embed_hybrid,
        "/similarity": embed.similarity,
        "/v1/embeddings": embed.openai_embeddings,
        "/embeddings": embed.openai_embeddings,
        "/predict": predict.predict,
        "/rerank": predict.rerank,
        "/v1/rerank": rerank_v1.rerank_v1,
        "/decode": tokenize.decode,
        "/vertex": default.vertex,
        "/invocations": default.model_default,
        "/": default.model_default,
    }
    if settings.vertex_predict_route is not None:
        direct[settings.vertex_predict_route] = default.vertex
    routes = [
        *vertex_routes(settings),
        *(Route(path, endpoint.starlette, methods=["POST"]) for path, endpoint in direct.items()
          if path not in ("/", settings.vertex_predict_route)),
        Route("/tokenize", tokenize.tokenize.starlette, methods=["POST"]),
        Route("/", _root, methods=["GET", "POST"]),
        Route("/health", health.health, methods=["GET"]),
        Route("/ping", health.health, methods=["GET"]),
        Route("/info", health.info, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{name:path}", models.get_model, methods=["GET"]),
        Route("/docs", swagger_ui.docs, methods=["GET"]),
        Route(swagger_ui.ASSET_PREFIX + "{name}", swagger_ui.asset, methods=["GET"]),
        Route("/api-doc/openapi.json", health.openapi, methods=["GET"]),
    ]
    allow_origins = list(settings.cors_allow_origin) or ["*"]
    # CORS outermost so that preflights and 401s carry its headers too.
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "authorization", MODEL_HEADER],
        )
    ]
    if settings.api_key:
        public_get_paths = frozenset(p for p in (settings.vertex_health_route,) if p is not None)
        middleware.append(Middleware(ApiKeyMiddleware, api_key=settings.api_key, public_get_paths=public_get_paths))
    starlette = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            EmbedServeError: _embedserve_error,
            ClientGone: _client_gone,
            Exception: _unexpected,
        },
    )
    return FrontApp(starlette, direct, CorsPolicy(allow_origins), settings.api_key or None)
