"""Start and stop the tei.v1 gRPC server: services, auth, health and reflection."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from embedserve.router.bind import host_port
from embedserve.router.grpc_api.servicers import EmbedService, InfoService, PredictService, RerankService, TokenizeService
from embedserve.router.state import AppState

logger = logging.getLogger(__name__)

SERVICES = {name: tei_pb2.DESCRIPTOR.services_by_name[name].full_name
            for name in ("Info", "Embed", "Predict", "Rerank", "Tokenize")}
# Which services a model type can answer (TEI's health statuses).
SERVICES_BY_MODEL_TYPE = {
    "embedding": ("Embed",),
    "classifier": ("Predict",),
    "reranker": ("Predict", "Rerank"),
}
HEALTH_INTERVAL_S = 2.0
# TEI's tonic server keeps tonic's default 4 MiB cap on a request message (larger:
# RESOURCE_EXHAUSTED). Below it, an over-long text reaches the character guard
# and gets INVALID_ARGUMENT, as in TEI.
MAX_REQUEST_MESSAGE_BYTES = 4 * 1024 * 1024
# Health and reflection stay open without a key, as in TEI.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNAUTHENTICATED unless the `authorization` metadata is `Bearer <key>`."""

    def __init__(self, api_key: str) -> None:
        self._expected = f"Bearer {api_key}"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if hmac.compare_digest(str(metadata.get("authorization", "")), self._expected):
            return handler
        return _refusal(handler)


def _refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "No valid auth token")

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


class GrpcFrontend:
    """The gRPC server plus the task that keeps its health statuses current."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        interceptors = [ApiKeyInterceptor(settings.api_key)] if settings.api_key else []
        self._state = state
        # One router process: no SO_REUSEPORT, a second server on a taken port must
        # fail, not share it. Several fronts (--router-workers >= 2) share the port
        # through it, the kernel spreading connections over them.
        reuse_port = 1 if settings.router_workers > 1 else 0
        self._server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.so_reuseport", reuse_port), ("grpc.max_receive_message_length", MAX_REQUEST_MESSAGE_BYTES)])
        tei_pb2_grpc.add_InfoServicer_to_server(InfoService(state), self._server)
        tei_pb2_grpc.add_EmbedServicer_to_server(EmbedService(state), self._server)
        tei_pb2_grpc.add_PredictServicer_to_server(PredictService(state), self._server)
        tei_pb2_grpc.add_RerankServicer_to_server(RerankService(state), self._server)
        tei_pb2_grpc.add_TokenizeServicer_to_server(TokenizeService(state), self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [*SERVICES.values(), health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._server,
        )
        # The same addresses as HTTP (router/bind.py); every one must bind.
        for host in settings.bind_hosts:
            address = host_port(host, settings.grpc_port)
            self.port = self._server.add_insecure_port(address)
            if not self.port:
                raise RuntimeError(f"cannot bind the gRPC port on {address}")
        self._monitor: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._update_health()
        await self._server.start()
        self._monitor = asyncio.create_task(self._watch_health(), name="grpc-health")
        logger.info("tei.v1 gRPC API on port %d", self.port)

    def begin_drain(self, grace_s: float) -> None:
        """Refuse new calls and let in-flight ones finish within `grace_s`."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._server.stop(grace_s), name="grpc-drain")

    async def stop(self, grace_s: float) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        self.begin_drain(grace_s)
        assert self._stopping is not None
        await self._stopping

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await self._update_health()

    async def _update_health(self) -> None:
        state = self._state
        # A service serves while a model of a type that has it is healthy; the
        # server ("") while every model is.
        healthy_models = []
        for model in state.models:
            results = await asyncio.gather(*(backend.health() for backend in model.backends))
            if any(results) and not state.draining:
                healthy_models.append(model)
        healthy = len(healthy_models) == len(state.models)
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        model_services = {name for model in healthy_models
                          for name in SERVICES_BY_MODEL_TYPE.get(model.settings.model_type, ())}
        for name, full_name in SERVICES.items():
            if name in ("Info", "Tokenize"):
                status = serving  # these need no backend
            else:
                status = serving if name in model_services else not_serving
            await self._health.set(full_name, status)
        await self._health.set("", serving if healthy else not_serving)
