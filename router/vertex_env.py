"""Vertex AI's environment contract, read once by the launcher (never by the router).

Vertex AI tells a custom container where to listen and which paths it calls
through AIP_HTTP_PORT, AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE. TEI's `google`
build honours them (router/src/lib.rs, router/src/http/server.rs): the port
replaces --port, the predict route is one more POST route to the /vertex handler,
the health route one more public GET route to /health. We have one build, so we
honour them whenever they are set; the router gets the routes in its RouterConfig.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger("launcher")

MAX_PORT = 65535


class VertexEnvError(ValueError):
    """A Vertex route the HTTP server cannot serve."""


@dataclass(frozen=True)
class VertexEnv:
    # The HTTP port: AIP_HTTP_PORT when it is a port number, else --port.
    http_port: int
    predict_route: str | None = None
    health_route: str | None = None


def read_vertex_env(environ: Mapping[str, str], port: int) -> VertexEnv:
    return VertexEnv(
        http_port=_http_port(environ.get("AIP_HTTP_PORT"), port),
        predict_route=_route("AIP_PREDICT_ROUTE", environ.get("AIP_PREDICT_ROUTE")),
        health_route=_route("AIP_HEALTH_ROUTE", environ.get("AIP_HEALTH_ROUTE")),
    )


def _http_port(raw: str | None, port: int) -> int:
    if raw is None or not raw.strip():
        return port
    # TEI keeps --port when AIP_HTTP_PORT does not parse as a port; we say so.
    if not raw.strip().isdigit() or int(raw) > MAX_PORT:
        logger.warning("AIP_HTTP_PORT=%r is not a port number; serving HTTP on port %d", raw, port)
        return port
    override = int(raw)
    if override != port:
        logger.info("AIP_HTTP_PORT is set: overriding port %d by port %d", port, override)
    return override


def _route(name: str, raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    # A request path as it arrives in the ASGI scope: no query, no fragment, no
    # `{...}` (Starlette would read it as a path parameter).
    if not raw.startswith("/") or any(c in raw for c in "?#{} \t\r\n"):
        raise VertexEnvError(f"{name}={raw!r} is not a route: it must start with / and hold no query, "
                             "fragment, braces or spaces")
    logger.info("serving the Vertex AI %s route on %s", "predict" if name == "AIP_PREDICT_ROUTE" else "health", raw)
    return raw
