"""The multi-process load generator against a small local HTTP/1.1 peer that answers
each request as its texts ask: every request sent once, failures counted by status,
keep-alive, `Connection: close` and chunked bodies all read."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.mp_load import BAD_BODY, run_client_processes
from tests.bench.stub_http import StubHttpServer

TOKENS_PER_TEXT = 3


def _answer(texts: list[str]) -> tuple[int, bytes, dict[str, str]]:
    if "please-503" in texts:
        return 503, b'{"error":"overloaded","error_type":"Overloaded"}', {}
    vector = base64.b64encode(b"\0" * 16).decode()
    count = len(texts) + 1 if "please-bad" in texts else len(texts)
    body = json.dumps({"object": "list", "model": "stub",
                       "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)],
                       "usage": {"prompt_tokens": TOKENS_PER_TEXT * len(texts),
                                 "total_tokens": TOKENS_PER_TEXT * len(texts)}}).encode()
    headers = {"connection": "close"} if "please-close" in texts else {}
    if "please-chunked" in texts:
        headers["transfer-encoding"] = "chunked"
    return 200, body, headers


class StubServer(StubHttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.received: Counter[str] = Counter()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                texts = json.loads(await reader.readexactly(length))["input"]
                self.received[texts[0]] += 1
                status, body, headers = _answer(texts)
                if headers.get("transfer-encoding") == "chunked":
                    half = len(body) // 2
                    payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
                    payload += b"0\r\n\r\n"
                else:
                    headers["content-length"] = str(len(body))
                    payload = body
                lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write(f"HTTP/1.1 {status} X\r\n{lines}\r\n".encode() + payload)
                await writer.drain()
                if headers.get("connection") == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def test_every_request_once_and_failures_by_status(stub: StubServer) -> None:
    kinds = ["ok", "please-503", "please-bad", "please-close", "please-chunked"]
    requests = [[kinds[i % len(kinds)] if i % len(kinds) else f"ok-{i}", "filler"] for i in range(60)]
    started: list[bool] = []
    result = run_client_processes("127.0.0.1", stub.port, requests, clients=6, processes=2,
                                  on_start=lambda: started.append(True))
    assert started == [True]
    assert sum(stub.received.values()) == len(requests)
    assert all(count == 1 for first, count in stub.received.items() if first.startswith("ok-"))
    assert result.failures == Counter({"503": 12, BAD_BODY: 12})
    assert "Overloaded" in result.failure_examples["503"]
    assert result.requests == 36 and result.texts == 72 and result.tokens == 72 * TOKENS_PER_TEXT
    assert len(result.latencies_s) == 36 and result.processes == 2 and result.client_cpu_s > 0


def test_refused_connections_are_transport_failures() -> None:
    from bench.server import free_port

    result = run_client_processes("127.0.0.1", free_port(), [["a"], ["b"], ["c"]], clients=2, processes=1)
    assert result.failures == Counter({"transport": 3}) and result.requests == 0
