"""The router's typed settings, built once from the launcher's RouterConfig."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from embedserve.proto.gen_pb import config_pb2
from embedserve.router.bind import resolve_bind_hosts
from embedserve.router.lanes import LanePolicy


@dataclass(frozen=True)
class ModelSettings:
    """One served model's own settings (RouterConfig.models); every other
    RouterSettings field is the server's, shared by all models."""

    name: str
    model_id: str
    backend_sockets: tuple[str, ...]
    revision: str | None
    pooling: str
    max_concurrent_requests: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_input_length: int
    position_offset: int
    default_prompt: str | None
    prompts: dict[str, str]
    model_type: str
    id2label: dict[str, str]
    label2id: dict[str, int]

    @classmethod
    def from_proto(cls, model: config_pb2.ServedModel) -> ModelSettings:
        return cls(
            name=model.name or model.model_id, model_id=model.model_id, backend_sockets=tuple(model.backend_sockets),
            revision=model.revision if model.HasField("revision") else None, pooling=model.pooling,
            max_concurrent_requests=model.max_concurrent_requests, max_batch_tokens=model.max_batch_tokens,
            max_batch_requests=model.max_batch_requests or None, max_input_length=model.max_input_length,
            position_offset=model.position_offset,
            default_prompt=model.default_prompt if model.HasField("default_prompt") else None,
            prompts=dict(model.prompts), model_type=model.model_type or "embedding", id2label=dict(model.id2label),
            label2id=dict(model.label2id),
        )


@dataclass(frozen=True)
class RouterSettings:
    model_id: str
    served_model_name: str
    backend_sockets: tuple[str, ...]
    tokenizer_sockets: tuple[str, ...]
    # IP addresses both HTTP and gRPC listen on (router/bind.py).
    bind_hosts: tuple[str, ...] = ("0.0.0.0",)
    port: int = 3000
    revision: str | None = None
    pooling: str = "mean"
    max_concurrent_requests: int = 512
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    max_client_batch_size: int = 32
    auto_truncate: bool = True
    max_input_length: int = 512
    position_offset: int = 0
    default_prompt: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    payload_limit: int = 2_000_000
    json_output: bool = False
    tokenization_workers: int = 1
    graceful_timeout_s: float = 30.0
    model_type: str = "embedding"
    id2label: dict[str, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    cors_allow_origin: tuple[str, ...] = ()
    task: str = ""
    grpc_port: int = 0
    grpc_max_parallel_stream_requests: int = 1024
    default_request_timeout_ms: int = 0
    # Seconds a request body may take to arrive; 0: no limit.
    body_read_timeout_s: float = 30.0
    # Several router processes (--router-workers >= 2): the queue owner's socket
    # (empty: the queue is in this process), the HTTP sockets the launcher bound
    # (empty: bind bind_hosts here), and which front this is.
    owner_socket: str = ""
    http_fds: tuple[int, ...] = ()
    front_index: int = 0
    router_workers: int = 1
    # "priority": interactive work overtakes bulk work (router/lanes.py); "fifo": TEI's order.
    queue_policy: str = "priority"
    interactive_max_tokens: int = 128
    # Vertex AI's AIP_PREDICT_ROUTE (answers as /vertex) and AIP_HEALTH_ROUTE
    # (answers as /health), as the launcher read them; None: not served.
    vertex_predict_route: str | None = None
    vertex_health_route: str | None = None
    # The --prometheus-port listening sockets the launcher bound (one per bind host); empty: none.
    prometheus_fds: tuple[int, ...] = ()
    # Tracing (proto/tracing): where spans go (None: no tracing), as which service, or none at all.
    otlp_endpoint: str | None = None
    otlp_service_name: str = "text-embeddings-inference.server"
    disable_spans: bool = False
    # Every served model, the first the default; the per-model fields above are the
    # default model's. Empty only where settings are built directly (unit tests):
    # then the fields above describe the one model.
    models: tuple[ModelSettings, ...] = ()

    def viewing(self, model: ModelSettings) -> RouterSettings:
        """These settings with `model`'s own fields."""
        return replace(
            self, model_id=model.model_id, served_model_name=model.name, backend_sockets=model.backend_sockets,
            revision=model.revision, pooling=model.pooling, max_concurrent_requests=model.max_concurrent_requests,
            max_batch_tokens=model.max_batch_tokens, max_batch_requests=model.max_batch_requests,
            max_input_length=model.max_input_length, position_offset=model.position_offset,
            default_prompt=model.default_prompt, prompts=model.prompts, model_type=model.model_type,
            id2label=model.id2label, label2id=model.label2id,
        )

    def model_views(self) -> list[RouterSettings]:
        """One view per served model, in order: these settings with that model's
        own fields. Each model's operations read only their view."""
        if not self.models:
            return [self]
        return [replace(self.viewing(m), models=()) for m in self.models]

    @property
    def lane_policy(self) -> LanePolicy:
        return LanePolicy(self.queue_policy == "priority", self.interactive_max_tokens)

    @property
    def is_splade(self) -> bool:
        return self.pooling == "splade"

    def labels(self) -> list[str]:
        """Labels in class-index order."""
        return [self.id2label.get(str(i), f"LABEL_{i}") for i in range(len(self.id2label))]

    @classmethod
    def from_proto(cls, config: config_pb2.RouterConfig) -> RouterSettings:
        models = tuple(ModelSettings.from_proto(model) for model in config.models)
        if not models:
            raise ValueError("the router's config names no model")
        server = cls(
            model_id="",
            served_model_name="",
            backend_sockets=(),
            tokenizer_sockets=tuple(config.tokenizer_sockets),
            bind_hosts=tuple(config.bind_hosts) or resolve_bind_hosts(config.hostname or "0.0.0.0"),
            port=config.port,
            max_client_batch_size=config.max_client_batch_size,
            auto_truncate=config.auto_truncate,
            api_key=config.api_key if config.HasField("api_key") else None,
            payload_limit=config.payload_limit,
            json_output=config.json_output,
            tokenization_workers=config.tokenization_workers or len(config.tokenizer_sockets),
            graceful_timeout_s=config.graceful_timeout_s or 30.0,
            cors_allow_origin=tuple(config.cors_allow_origin),
            task=config.task,
            grpc_port=config.grpc_port,
            grpc_max_parallel_stream_requests=config.grpc_max_parallel_stream_requests or 1024,
            default_request_timeout_ms=config.default_request_timeout_ms,
            body_read_timeout_s=config.body_read_timeout_s,
            owner_socket=config.owner_socket,
            http_fds=tuple(config.http_fds),
            front_index=config.front_index,
            router_workers=config.router_workers or 1,
            queue_policy=config.queue_policy or "priority",
            interactive_max_tokens=config.interactive_max_tokens,
            vertex_predict_route=config.vertex_predict_route if config.HasField("vertex_predict_route") else None,
            vertex_health_route=config.vertex_health_route if config.HasField("vertex_health_route") else None,
            prometheus_fds=tuple(config.prometheus_fds),
            otlp_endpoint=config.otlp_endpoint if config.HasField("otlp_endpoint") else None,
            otlp_service_name=config.otlp_service_name,
            disable_spans=config.disable_spans,
            models=models,
        )
        return server.viewing(models[0])
