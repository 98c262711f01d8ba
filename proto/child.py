"""What every child process of the launcher does the same way.

Configuration. The launcher starts a child as `python -m <role> <name>` (the
name only for `ps`) with a pipe on stdin, and writes the child's config proto
there at once: a 4-byte big-endian length, then the serialized message. The
child reads exactly that first (`read_config`). Argv carries none of it,
because `/proc/<pid>/cmdline` is world-readable and the config holds the API
key; the environment children inherit has no secrets (proto/redact.py). The
launcher keeps the pipe open and writes nothing more.

Lifetime. A child exits when it reads EOF on that pipe, i.e. when the launcher
is gone, even by SIGKILL, so it never leaves orphans behind. The order matters
then as on SIGTERM: the router drains first while the workers still answer it.
So a worker (backend, tokenizer) that sees the launcher gone waits for the
router too, through a second pipe (`RouterLink`): the launcher gives its write
end to the router alone and closes its own copy once the router runs, and gives
the read end to every worker, restarted ones included. EOF on it means the
router has exited (or never started); the wait is bounded by the router's
graceful timeout plus a margin. Then the worker stops and removes its socket.

Children log to the inherited stderr (JSON lines with `--json-output`), set up
by proto/logs.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from embedserve.proto.gen_pb import config_pb2

M = TypeVar("M", bound=Message)

_LENGTH = struct.Struct(">I")
NOT_FROM_LAUNCHER = "this process is started by the embedserve launcher, which sends its configuration on stdin"
# Far above any real config (prompts and labels included); a garbled length
# must not make the child wait for gigabytes.
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def encode_config(message: Message) -> bytes:
    """The frame the launcher writes to a child's stdin."""
    payload: bytes = message.SerializeToString()
    return _LENGTH.pack(len(payload)) + payload


def read_config(message_type: type[M], fd: int = 0) -> M:
    """Read the one config frame from the launcher's pipe (stdin by default)."""
    if os.isatty(fd):
        raise SystemExit(NOT_FROM_LAUNCHER)
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size))
    if size > MAX_CONFIG_BYTES:
        raise SystemExit(f"a config frame of {size} bytes: {NOT_FROM_LAUNCHER}")
    message: M = message_type()
    try:
        message.ParseFromString(_read_exactly(fd, size))
    except DecodeError as exc:
        raise SystemExit(f"a config that does not parse ({exc}): {NOT_FROM_LAUNCHER}") from exc
    return message


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise SystemExit(f"stdin closed before the configuration arrived: {NOT_FROM_LAUNCHER}")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def watch_parent(on_parent_gone: Callable[[], object], router_link: config_pb2.RouterLink | None = None) -> None:
    """Call `on_parent_gone` (from a daemon thread) when the launcher's stdin pipe
    closes; with a `router_link` (workers), only once the router is gone too."""

    def wait_for_eof() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside the buffered
        # reader holds its lock and aborts interpreter shutdown.
        _read_to_eof(stdin_fd)
        if router_link is not None and router_link.fd > 0:
            logging.getLogger(__name__).info("launcher gone; serving until the router exits")
            _read_to_eof(router_link.fd, router_link.timeout_s)
        on_parent_gone()

    if sys.stdin is None or sys.stdin.isatty():
        return
    stdin_fd = sys.stdin.fileno()
    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()


def _read_to_eof(fd: int, timeout_s: float | None = None) -> None:
    """Block until EOF on `fd` (nobody holds its write end any more) or `timeout_s`."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return
            if not os.read(fd, 4096):
                return
    except OSError:
        return


async def serve_on_socket(
    server: grpc.aio.Server, socket_path: str, grace_s: float, router_link: config_pb2.RouterLink | None = None
) -> None:
    """Serve `server` on a Unix socket until SIGTERM, SIGINT or the launcher's exit
    (with a `router_link`: and the router's), then stop within `grace_s`. A stale
    socket file is removed first, so its mere presence never passes for readiness,
    and the socket is removed at the end."""
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_parent(lambda: loop.call_soon_threadsafe(stop.set), router_link)
    await stop.wait()
    await server.stop(grace=grace_s)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
