"""Entry point of the queue owner process: `python -m router.owner owner`, its
RouterConfig on stdin (proto/child.py); --router-workers >= 2 only.

It connects to the backends, runs the one token-budget queue and its dispatch,
holds the server-wide permits, and serves the fronts on `owner_socket`. On
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
from embedserve.router.settings import RouterSettings

logger = logging.getLogger("embedserve.router.owner")

# The fronts' own drain ends by graceful_timeout_s plus Hypercorn's close.
FRONT_DRAIN_MARGIN_S = 10.0


async def serve(settings: RouterSettings) -> None:
    from embedserve.router.app import build_queue_owner, connect_backends
    from embedserve.router.infer import Permits
    from embedserve.router.metrics import Metrics
    from embedserve.router.owner.service import OwnerService

    metrics = Metrics(settings.max_input_length)
    backends, facts, max_batch_requests = await connect_backends(settings)
    owner = build_queue_owner(settings, backends, facts, max_batch_requests, metrics)
    service = OwnerService(owner, Permits(settings.max_concurrent_requests), metrics, settings.max_input_length)
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
    logger.info("queue owner ready on %s: %d backend(s), max_batch_tokens=%d, max_concurrent_requests=%d",
                path, len(backends), settings.max_batch_tokens, settings.max_concurrent_requests)
    await stop.wait()
    # Fronts still connected are draining: their accepted requests still need the queue.
    try:
        await asyncio.wait_for(service.no_connections.wait(), settings.graceful_timeout_s + FRONT_DRAIN_MARGIN_S)
    except TimeoutError:
        logger.warning("fronts still connected after the graceful timeout; stopping anyway")
    server.close()
    await owner.stop()
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
