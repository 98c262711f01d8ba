"""Entry point of the router process: `python -m router --config '<RouterConfig json>'`."""

from __future__ import annotations

import uvloop

from proto.child import configure_logging, parse_config
from proto.gen_pb import config_pb2
from router.server import run
from router.settings import RouterSettings


def main() -> None:
    config = parse_config(config_pb2.RouterConfig)
    configure_logging("router", config.json_output)
    uvloop.run(run(RouterSettings.from_proto(config)))


if __name__ == "__main__":
    main()
