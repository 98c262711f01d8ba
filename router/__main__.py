"""Entry point of the router process: `python -m router router`, its RouterConfig on stdin
(proto/child.py)."""

from __future__ import annotations

import sys

import uvloop

from proto.child import read_config
from proto.gen_pb import config_pb2
from proto.logs import configure_logging
from router.server import run
from router.settings import RouterSettings


def main() -> None:
    config = read_config(config_pb2.RouterConfig)
    role = f"router-{config.front_index}" if config.owner_socket else "router"
    configure_logging(role, config.json_output)
    sys.exit(uvloop.run(run(RouterSettings.from_proto(config))))


if __name__ == "__main__":
    main()
