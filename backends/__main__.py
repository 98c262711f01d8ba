"""Entry point of one backend process: `python -m backends backend-<n>`, its BackendConfig
on stdin (proto/child.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from embedserve.proto import tracing
from embedserve.proto.child import read_config, serve_on_socket
from embedserve.proto.gen_pb import config_pb2
from embedserve.proto.logs import configure_logging

if TYPE_CHECKING:
    from embedserve.backends.base import Activation, Backend, EngineSpec

logger = logging.getLogger("embedserve.backends")

EXIT_LOAD_FAILED = 3

ACTIVATIONS: dict[int, Activation] = {
    config_pb2.DENSE_ACTIVATION_IDENTITY: "identity",
    config_pb2.DENSE_ACTIVATION_TANH: "tanh",
    config_pb2.DENSE_ACTIVATION_RELU: "relu",
    config_pb2.DENSE_ACTIVATION_SIGMOID: "sigmoid",
}


async def serve(config: config_pb2.BackendConfig) -> None:
    import grpc

    from embedserve.backends.engines import load_engine
    from embedserve.backends.model_cpu import model_threads_named
    from embedserve.backends.server import GRPC_OPTIONS, BackendServicer
    from embedserve.proto.gen_pb import backend_pb2_grpc

    started = time.monotonic()
    spec = engine_spec(config)
    try:
        # onnxruntime starts its thread pool here: those threads run the model.
        with model_threads_named():
            engine = load_engine(config.backend, spec)
            _warm_up(engine)
    except Exception as exc:
        logger.error("cannot load %s with the %s backend: %s", config.model_dir, config.backend, exc)
        sys.exit(EXIT_LOAD_FAILED)
    # EMBEDSERVE_BULK_SLICES=off runs bulk batches whole: a baseline for measuring what slicing costs.
    slicing = os.environ.get("EMBEDSERVE_BULK_SLICES", "on") != "off"
    servicer = BackendServicer(engine, config.max_batch_tokens, slicing=slicing, rerank=spec.causal_rerank)
    logger.info("%s backend ready on %s in %.1fs", config.backend, engine.device, time.monotonic() - started)

    server = grpc.aio.server(options=GRPC_OPTIONS)
    backend_pb2_grpc.add_BackendServicer_to_server(servicer, server)
    await serve_on_socket(server, config.socket_path, grace_s=5, router_link=config.router_link)
    servicer.close()


def engine_spec(config: config_pb2.BackendConfig) -> EngineSpec:
    from embedserve.backends.base import CausalRerankSpec, DenseSpec, EngineSpec

    dense = tuple(
        DenseSpec(Path(layer.path), layer.in_features, layer.out_features, layer.bias, ACTIVATIONS[layer.activation])
        for layer in config.dense_layers
    )
    causal = None
    if config.HasField("causal_reranker"):
        reranker = config.causal_reranker
        causal = CausalRerankSpec(reranker.template, reranker.instruction, reranker.yes_token, reranker.no_token)
    return EngineSpec(Path(config.model_dir), config.device, config.dtype, config.pooling, Path(config.cache_dir),
                      cache_max_bytes=config.cache_max_bytes, dense_layers=dense,
                      trust_remote_code=config.trust_remote_code, causal_rerank=causal,
                      max_batch_tokens=config.max_batch_tokens)


def _warm_up(engine: Backend) -> None:
    """One tiny forward pass, so the first request does not pay for lazy init."""
    import numpy as np

    from embedserve.backends.base import ModelBatch

    ids = np.zeros(2, dtype=np.uint32)  # id 0 exists in every vocabulary
    batch = ModelBatch(ids, np.zeros(2, np.uint32), np.arange(2, dtype=np.uint32), np.array([0, 2], np.uint32), 2)
    if engine.is_classifier:
        engine.predict(batch)
    else:
        engine.embed(batch)


def main() -> None:
    config = read_config(config_pb2.BackendConfig)
    if config.device == "cpu":
        # Before torch loads OpenMP: idle intra-op workers sleep instead of spinning
        # between parallel regions. Spinning burns the cores the router and tokenizer
        # workers need; on a contended 2-core box a small model's forward cost ~15x
        # the CPU with spinning workers (bench/CPU_NOTES.md). Set it to override.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    configure_logging(config.name or "backend", config.json_output)
    tracing.configure(config.otlp_endpoint if config.HasField("otlp_endpoint") else None, config.otlp_service_name,
                      config.disable_spans, config.name or "backend", config.json_output)
    try:
        asyncio.run(serve(config))
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
