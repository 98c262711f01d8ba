"""Entry point of the router process: `python -m router router`, its RouterConfig on stdin
(proto/child.py)."""

from __future__ import annotations

import uvloop

from proto.child import configure_logging, read_config
from proto.gen_pb import config_pb2
from router.server import run
from router.settings import RouterSettings


def main() -> None:
    config = read_config(config_pb2.RouterConfig)
    configure_logging("router", config.json_output)
    uvloop.run(run(RouterSettings.from_proto(config)))


if __name__ == "__main__":
    main()
