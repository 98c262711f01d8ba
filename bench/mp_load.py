"""Load that can saturate the server: several client processes, each an event loop of
closed-loop clients on raw HTTP/1.1 keep-alive connections, sending `/v1/embeddings`
with `encoding_format: base64` and counting failures by status.

The processes connect and encode every body first, then wait for one start signal,
so a caller can start its meters on an idle server and the load starts at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import os
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.http1 import Connection, TransportError
from bench.load import Throughput

ROUTE = "/v1/embeddings"
REQUEST_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 120.0
TRANSPORT = "transport"  # no HTTP response at all
TIMEOUT = "timeout"
BAD_BODY = "200-bad-body"  # a 200 whose body does not hold one vector per input

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # the GPU machine may lack orjson
    def _dumps(value: Any) -> bytes:
        return json.dumps(value).encode()

    _loads = json.loads


def request_body(texts: list[str]) -> bytes:
    return _dumps({"input": texts, "model": "bench", "encoding_format": "base64"})


def served_tokens(texts: list[str], body: bytes) -> int:
    """Prompt tokens of a valid base64 response; ValueError when it is not one.
    Every vector is decoded: a 200 with the wrong vectors must not count as served."""
    try:
        answer = _loads(body)
        items = answer["data"]
        if len(items) != len(texts):
            raise ValueError(f"expected {len(texts)} vectors, got {len(items)}")
        sizes = {len(base64.b64decode(item["embedding"], validate=True)) for item in items}
        if len(sizes) != 1 or (size := sizes.pop()) == 0 or size % 4:
            raise ValueError(f"vectors of {sorted(sizes)} bytes")
        return int(answer["usage"]["prompt_tokens"])
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


@dataclass(kw_only=True)
class FailureTally:
    """Failed requests by status, with the first detail of each (a base of the
    load generators' outcomes)."""

    failures: Counter[str] = field(default_factory=Counter)
    failure_examples: dict[str, str] = field(default_factory=dict)  # first detail per status

    def fail(self, status: str, detail: str) -> None:
        self.failures[status] += 1
        self.failure_examples.setdefault(status, detail[:300])


@dataclass
class ShardOutcome(FailureTally):
    """One client process's share, sent back to the parent."""

    requests: int = 0  # answered 200 with valid vectors
    texts: int = 0
    tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the served requests
    cpu_s: float = 0.0  # this process's own CPU during the timed part
    started: float = 0.0  # time.time(), comparable across processes
    finished: float = 0.0


@dataclass(frozen=True)
class ShardSpec:
    host: str
    port: int
    requests: list[list[str]]
    clients: int


class RequestFailed(Exception):
    """A bench request that did not serve its texts: `label` is how it is counted
    (an HTTP status, TRANSPORT, TIMEOUT or BAD_BODY)."""

    def __init__(self, label: str, detail: str) -> None:
        super().__init__(detail)
        self.label = label
        self.detail = detail


async def timed_post(connection: Connection, texts: list[str], body: bytes, timeout_s: float,
                     extra_headers: str = "") -> tuple[float, int]:
    """POST one request body: (seconds to its answer, tokens served), or RequestFailed.
    A request that times out closes its connection: a late answer must not be read
    as the next request's."""
    started = time.perf_counter()
    try:
        response = await asyncio.wait_for(connection.post(ROUTE, body, extra_headers=extra_headers), timeout_s)
    except TransportError as exc:
        raise RequestFailed(TRANSPORT, str(exc)) from None
    except asyncio.TimeoutError:
        connection.close()
        raise RequestFailed(TIMEOUT, f"no answer in {timeout_s:.0f}s") from None
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RequestFailed(str(response.status), response.body.decode(errors="replace"))
    try:
        return seconds, served_tokens(texts, response.body)
    except ValueError as exc:
        raise RequestFailed(BAD_BODY, str(exc)) from None


async def _client(connection: Connection, bodies: list[tuple[list[str], bytes]], order: Any,
                  outcome: ShardOutcome) -> None:
    for index in order:  # one iterator shared by the shard's clients: each request is sent once
        texts, body = bodies[index]
        try:
            elapsed, tokens = await timed_post(connection, texts, body, REQUEST_TIMEOUT_S)
        except RequestFailed as failure:
            outcome.fail(failure.label, failure.detail)
            continue
        outcome.requests += 1
        outcome.texts += len(texts)
        outcome.tokens += tokens
        outcome.latencies_s.append(elapsed)


async def _shard(spec: ShardSpec, ready: Any, go: Any) -> ShardOutcome:
    bodies = [(texts, request_body(texts)) for texts in spec.requests]
    connections = [Connection(spec.host, spec.port) for _ in range(spec.clients)]
    for connection in connections:
        try:
            await connection.connect()
        except OSError:
            pass  # the first request reconnects and counts the failure
    ready.put(os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    outcome = ShardOutcome(started=time.time())
    cpu_before = time.process_time()
    order = iter(range(len(bodies)))
    await asyncio.gather(*(_client(connection, bodies, order, outcome) for connection in connections))
    outcome.cpu_s = time.process_time() - cpu_before
    outcome.finished = time.time()
    for connection in connections:
        connection.close()
    return outcome


def _shard_main(spec: ShardSpec, ready: Any, go: Any, results: Any) -> None:
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results.put(runner.run(_shard(spec, ready, go)))


@dataclass
class MpLoadResult(Throughput):
    texts: int
    seconds: float
    tokens: int
    requests: int
    latencies_s: list[float]
    failures: Counter[str]  # by HTTP status, or transport / timeout / 200-bad-body
    failure_examples: dict[str, str]
    client_cpu_s: float  # all client processes together, timed part only
    processes: int
    clients: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return float(np.quantile(np.asarray(self.latencies_s), quantile)) * 1000.0


def _split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def get_from(channel: Any, workers: list[Any], deadline: float) -> Any:
    """The next message, or an error as soon as a load process died instead of hanging."""
    while True:
        try:
            return channel.get(timeout=1.0)
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a load process exited with code {dead[0]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError("the load processes stopped answering") from None


def run_client_processes(host: str, port: int, requests: list[list[str]], clients: int, processes: int,
                         on_start: Callable[[], None] | None = None) -> MpLoadResult:
    """Send every request once from `clients` connections spread over `processes`
    processes; `on_start` runs when all are connected, just before the first request."""
    processes = max(1, min(processes, clients))
    context = multiprocessing.get_context("spawn")  # no inherited event loop or server state
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    specs = [ShardSpec(host, port, requests[i::processes], n) for i, n in enumerate(_split(clients, processes))]
    workers = [context.Process(target=_shard_main, args=(spec, ready, go, results), daemon=True) for spec in specs]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for _ in workers:
            get_from(ready, workers, deadline)
        if on_start is not None:
            on_start()
        go.set()
        deadline = time.monotonic() + REQUEST_TIMEOUT_S * (1 + len(requests))
        outcomes: list[ShardOutcome] = [get_from(results, workers, deadline) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10.0)
            if worker.is_alive():
                worker.kill()
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for outcome in outcomes:
        failures.update(outcome.failures)
        for status, detail in outcome.failure_examples.items():
            examples.setdefault(status, detail)
    return MpLoadResult(
        texts=sum(o.texts for o in outcomes), tokens=sum(o.tokens for o in outcomes),
        seconds=max(o.finished for o in outcomes) - min(o.started for o in outcomes),
        requests=sum(o.requests for o in outcomes), latencies_s=[s for o in outcomes for s in o.latencies_s],
        failures=failures, failure_examples=examples, client_cpu_s=sum(o.cpu_s for o in outcomes),
        processes=len(workers), clients=clients)
