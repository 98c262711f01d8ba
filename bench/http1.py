"""A minimal HTTP/1.1 keep-alive client on asyncio streams.

httpx costs the load generator about as much CPU per request as the server's router;
on a 2-core machine that steals the cores being measured. This sends one prepared
POST at a time on one connection and parses only status, headers and body.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

HEADER_LIMIT = 1 << 16


class TransportError(Exception):
    """No complete HTTP response: refused, reset, or closed mid-response."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def header_lines(headers: dict[str, str]) -> str:
    """Extra request headers in wire form, built once per client rather than per request."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items())


class Connection:
    """One client's connection, reopened when the server closed the previous one."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=HEADER_LIMIT)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def post(self, path: str, body: bytes, content_type: str = "application/json",
                   extra_headers: str = "") -> Response:
        """`extra_headers`: header lines, each ending in CRLF (see `header_lines`)."""
        try:
            await self.connect()
            assert self._reader is not None and self._writer is not None
            self._writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"{extra_headers}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head[:-4])
            if "content-length" in headers:
                payload = await self._reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                payload = await _read_chunked(self._reader)
            else:
                payload = await self._reader.read()  # delimited by the server closing
                headers["connection"] = "close"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, payload)
