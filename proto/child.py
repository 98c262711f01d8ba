"""What every child process of the launcher does the same way.

Children are started by `launcher.py` with `--config '<json of a config proto>'`
and a pipe on stdin. They log to the inherited stderr (JSON lines with
`--json-output`) and exit when that pipe closes, so a launcher killed with
SIGKILL never leaves orphans behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def parse_config(message_type: type[M], argv: list[str] | None = None) -> M:
    parser = argparse.ArgumentParser(description="embedserve child process (started by the launcher)")
    parser.add_argument("--config", required=True, help="JSON form of the config proto")
    args = parser.parse_args(argv)
    message: M = json_format.Parse(args.config, message_type())
    return message


def encode_config(message: Message) -> str:
    text: str = json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True)
    return text


class _JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "process": self._role,
            "target": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(role: str, json_output: bool) -> None:
    """Set up the root logger of a process; called before heavy imports."""
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(_JsonFormatter(role))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-5s [{role}] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


def watch_parent(on_parent_gone: Callable[[], object]) -> None:
    """Call `on_parent_gone` (from a daemon thread) when the launcher's stdin pipe closes."""

    def wait_for_eof() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered
        # reader holds its lock and aborts interpreter shutdown.
        try:
            while os.read(stdin_fd, 4096):
                pass
        except OSError:
            pass
        on_parent_gone()

    if sys.stdin is None or sys.stdin.isatty():
        return
    stdin_fd = sys.stdin.fileno()
    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()


async def serve_on_socket(server: grpc.aio.Server, socket_path: str, grace_s: float) -> None:
    """Serve `server` on a Unix socket until SIGTERM, SIGINT or the launcher's exit,
    then stop within `grace_s`. A stale socket file is removed first, so its mere
    presence never passes for readiness, and the socket is removed at the end."""
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_parent(lambda: loop.call_soon_threadsafe(stop.set))
    await stop.wait()
    await server.stop(grace=grace_s)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
