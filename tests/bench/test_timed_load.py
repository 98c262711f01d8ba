"""Time-bounded lanes against a local HTTP/1.1 stub that records each request's
x-priority header: every lane sends its own header, nothing is sent after the stop,
and an answer that never comes is a timeout."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.timed_load import LaneSpec, Schedule, run_lanes
from tests.bench.stub_http import StubHttpServer


class HeaderStub(StubHttpServer):
    """Answers each /v1/embeddings like the server would (one vector per input, 2 tokens
    each), records the x-priority header per first text, and never answers "hang"."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[tuple[str, str]] = Counter()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
                texts = json.loads(await reader.readexactly(int(headers["content-length"])))["input"]
                self.seen[(texts[0], headers.get("x-priority", "-"))] += 1
                if texts[0] == "hang":
                    await asyncio.Event().wait()
                vector = base64.b64encode(b"\0" * 16).decode()
                body = json.dumps({"data": [{"embedding": vector} for _ in texts],
                                   "usage": {"prompt_tokens": 2 * len(texts)}}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        writer.close()


@pytest.fixture
def stub() -> Iterator[HeaderStub]:
    with HeaderStub() as server:
        yield server


def test_lanes_send_their_headers_until_the_stop_and_count_unanswered_as_timeouts(stub: HeaderStub) -> None:
    lanes = [LaneSpec("bulk", [["b1", "x", "y"], ["b2"]], 2, {"x-priority": "low"}),
             LaneSpec("query", [["q1"], ["q2"], ["q3"]], 1),
             LaneSpec("stuck", [["hang"]], 1, {"x-priority": "high"})]
    started: list[Schedule] = []
    schedule, (bulk, query, stuck) = run_lanes("127.0.0.1", stub.port, lanes, seconds=1.0, drain_s=0.5,
                                               on_start=started.append)
    assert started == [schedule] and schedule.stop - schedule.start == pytest.approx(1.0)
    assert schedule.give_up - schedule.stop == pytest.approx(0.5)
    # Each lane's requests carried that lane's header, and only that one.
    assert {header for (first, header) in stub.seen if first.startswith("b")} == {"low"}
    assert {header for (first, header) in stub.seen if first.startswith("q")} == {"-"}
    assert stub.seen[("hang", "high")] == 1  # its one request never came back, so it sent no other
    assert stuck.completions == [] and stuck.failures == Counter({"timeout": 1})
    for outcome, prefix in ((bulk, "b"), (query, "q")):
        assert outcome.failures == Counter()
        assert len(outcome.completions) == sum(n for (first, _), n in stub.seen.items() if first.startswith(prefix))
        assert all(schedule.start <= c.sent < schedule.stop for c in outcome.completions)
        assert all(c.tokens == 2 * c.texts for c in outcome.completions)
    assert {c.texts for c in bulk.completions} <= {1, 3} and {c.texts for c in query.completions} == {1}
