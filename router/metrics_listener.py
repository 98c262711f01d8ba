"""The --prometheus-port listener: /metrics on a port of its own.

TEI's gRPC build serves its Prometheus exporter there (router/src/prometheus.rs);
here every build does, beside /metrics on the main port, which stays. The
launcher binds the port once (RouterConfig.prometheus_fds) and hands it to the router process,
or to every front with --router-workers >= 2: any front answers with the
server-wide totals, as on the main port (AppState.render_metrics). Its own small
Starlette app on a second Hypercorn server in the same event loop, so no CORS
or API key (Prometheus scrapes without one, as on the main port) and nothing of
the inference routes is reachable there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from embedserve.router.state import AppState

PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4"


def metrics_app(current_state: Callable[[], AppState | None]) -> Starlette:
    """`current_state`: the main app's state, None until its start-up is done."""

    async def metrics(request: Request) -> Response:
        state = current_state()
        if state is None:
            return PlainTextResponse("starting\n", status_code=503)
        return Response(await state.render_metrics(), media_type=PROMETHEUS_MEDIA_TYPE)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


async def serve_metrics(app: Starlette, fds: tuple[int, ...], stopped: asyncio.Event) -> None:
    """Serve `app` on the listening sockets `fds` until `stopped` is set."""
    config = Config()
    config.bind = [f"fd://{fd}" for fd in fds]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    await serve(app, config, shutdown_trigger=stopped.wait)  # type: ignore[arg-type]
