"""Entry point of the router process: `python -m router router`, its RouterConfig on stdin
(proto/child.py)."""

from __future__ import annotations

import sys

import uvloop

from embedserve.proto import tracing
from embedserve.proto.child import read_config
from embedserve.proto.gen_pb import config_pb2
from embedserve.proto.logs import configure_logging
from embedserve.router.server import run
from embedserve.router.settings import RouterSettings


def main() -> None:
    config = read_config(config_pb2.RouterConfig)
    role = f"router-{config.front_index}" if config.owner_socket else "router"
    configure_logging(role, config.json_output)
    settings = RouterSettings.from_proto(config)
    tracing.configure(settings.otlp_endpoint, settings.otlp_service_name, settings.disable_spans, role,
                      settings.json_output)
    try:
        code = uvloop.run(run(settings))
    finally:
        tracing.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
