"""Serves the app with Hypercorn on uvloop until SIGTERM/SIGINT, then drains.

Hypercorn's own signal handling is off (a `shutdown_trigger` is given): this
module is the one place the router process handles signals.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config

from embedserve.proto.child import watch_parent
from embedserve.router import prompt_close
from embedserve.router.app import create_app
from embedserve.router.bind import host_port
from embedserve.router.metrics_listener import metrics_app, serve_metrics
from embedserve.router.settings import RouterSettings

logger = logging.getLogger(__name__)


async def run(settings: RouterSettings) -> int:
    """Serve until stopped; the exit code: 0, or 1 if the queue owner was lost."""
    stop = asyncio.Event()
    exit_code = 0

    def owner_lost() -> None:
        nonlocal exit_code
        exit_code = 1
        stop.set()

    app = create_app(settings, owner_lost)
    config = Config()
    if settings.http_fds:
        # The launcher bound the port once for every front (--router-workers >= 2).
        config.bind = [f"fd://{fd}" for fd in settings.http_fds]
    else:
        config.bind = [host_port(host, settings.port) for host in settings.bind_hosts]
    # The drain happens before Hypercorn is told to stop (shutdown_trigger); what
    # is left then are idle keep-alive connections.
    config.graceful_timeout = 5.0
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75  # above common load-balancer idle timeouts

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_parent(lambda: loop.call_soon_threadsafe(stop.set))

    async def shutdown_trigger() -> None:
        # 1) wait for SIGTERM; 2) drain: /health turns 503 (readiness), new requests
        # get 503 while the port stays open, gRPC takes no new calls; 3) once every
        # accepted request is answered (or the graceful timeout ran out), let
        # Hypercorn close its listeners and connections.
        await stop.wait()
        state = getattr(app.state, "embedserve", None)
        if state is None:
            return
        logger.info("draining %d in-flight request(s) (up to %.0fs)", state.in_flight, settings.graceful_timeout_s)
        state.begin_drain()
        if not await state.wait_idle(settings.graceful_timeout_s):
            logger.warning("graceful timeout: %d request(s) still in flight are cut off", state.in_flight)

    prompt_close.install()
    metrics_stopped = asyncio.Event()
    metrics_server = None
    if settings.prometheus_fds:
        # Up from the start (503 until the app is), down once the main server is.
        metrics_server = asyncio.create_task(serve_metrics(
            metrics_app(lambda: getattr(app.state, "embedserve", None)), settings.prometheus_fds, metrics_stopped
        ))
    await serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
    if metrics_server is not None:
        metrics_stopped.set()
        try:
            await metrics_server
        except Exception:
            logger.exception("the --prometheus-port listener failed")
    logger.info("router stopped")
    return exit_code
