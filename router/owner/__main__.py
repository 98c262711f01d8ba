"""Entry point of the queue owner process: `python -m router.owner owner`, its
RouterConfig on stdin (proto/child.py); --router-workers >= 2 only.

It connects to the backends, runs each served model's token-budget queue and
its dispatch, holds each model's permits, and serves the fronts on `owner_socket`. On
SIGTERM (or once the launcher is gone) it keeps serving the fronts that are
still connected, which drain first, for at most the graceful timeout plus a
margin, then stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import uvloop

from embedserve.proto import tracing
from embedserve.proto.child import read_config, watch_parent
from embedserve.proto.gen_pb import config_pb2
from embedserve.proto.logs import configure_logging
from embedserve.router.app import build_queue_owner, connect_backends
from embedserve.router.infer import Permits
from embedserve.router.metrics import Metrics
from embedserve.router.owner.service import OwnerService
from embedserve.router.settings import RouterSettings

logger = logging.getLogger("embedserve.router.owner")

# The fronts' own drain ends by graceful_timeout_s plus Hypercorn's close.
FRONT_DRAIN_MARGIN_S = 10.0


async def serve(settings: RouterSettings) -> None:
    views = settings.model_views()
    owners, permits, metrics, backends = [], [], [], []
    for view in views:
        model_metrics = Metrics(view.max_input_length)
        model_backends, facts, max_batch_requests = await connect_backends(view)
        owners.append(build_queue_owner(view, model_backends, facts, max_batch_requests, model_metrics))
        permits.append(Permits(view.max_concurrent_requests))
        metrics.append(model_metrics)
        backends.extend(model_backends)
    service = OwnerService(owners, permits, metrics, [view.max_input_length for view in views])
    for owner in owners:
        owner.start()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_parent(lambda: loop.call_soon_threadsafe(stop.set))

    path = settings.owner_socket
    if os.path.exists(path):
        os.unlink(path)
    server = await loop.create_unix_server(service.new_connection, path)
    logger.info("queue owner ready on %s: %d model(s), %d backend(s), max_batch_tokens=%s, max_concurrent_requests=%s",
                path, len(views), len(backends), "/".join(str(v.max_batch_tokens) for v in views),
                "/".join(str(v.max_concurrent_requests) for v in views))
    await stop.wait()
    # Fronts still connected are draining: their accepted requests still need the queue.
    try:
        await asyncio.wait_for(service.no_connections.wait(), settings.graceful_timeout_s + FRONT_DRAIN_MARGIN_S)
    except TimeoutError:
        logger.warning("fronts still connected after the graceful timeout; stopping anyway")
    server.close()
    await asyncio.gather(*(owner.stop() for owner in owners))
    await asyncio.gather(*(backend.close() for backend in backends))
    if os.path.exists(path):
        os.unlink(path)
    logger.info("queue owner stopped")


def main() -> None:
    config = read_config(config_pb2.RouterConfig)
    configure_logging("router-owner", config.json_output)
    settings = RouterSettings.from_proto(config)
    # The owner makes the queue and inference spans of every front's requests.
    tracing.configure(settings.otlp_endpoint, settings.otlp_service_name, settings.disable_spans, "router-owner",
                      settings.json_output)
    try:
        uvloop.run(serve(settings))
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
