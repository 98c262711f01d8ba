"""Time-bounded closed-loop load in lanes: each lane (e.g. "bulk" and "query") is one
client process whose connections send `/v1/embeddings` (base64) back to back until a
shared stop time, cycling through that lane's requests, with that lane's headers.

Every answered request comes back as a `Completion` (when it was sent, how long it
took, what it carried), so the caller can cut any window out of the run afterwards:
the throughput of one lane and the latency of another over the same seconds.
Requests still unanswered `drain_s` after the stop time count as `timeout` failures:
that is how a starved lane shows.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.http1 import Connection, header_lines
from bench.mp_load import TRANSPORT, FailureTally, RequestFailed, get_from, request_body, timed_post

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LaneSpec:
    name: str
    requests: list[list[str]]  # cycled through, shared by the lane's clients
    clients: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    sent: float  # time.time(), comparable across processes
    seconds: float  # latency, from a monotonic clock
    texts: int
    tokens: int  # the server's usage.prompt_tokens

    @property
    def finished(self) -> float:
        return self.sent + self.seconds


@dataclass
class LaneOutcome(FailureTally):
    name: str
    clients: int
    completions: list[Completion] = field(default_factory=list)
    cpu_s: float = 0.0  # the client process's own CPU while it sent


@dataclass(frozen=True)
class Schedule:
    """When the clients start, stop sending, and give up on answers (time.time())."""

    start: float
    stop: float
    give_up: float


async def _client(connection: Connection, bodies: list[tuple[list[str], bytes]], order: Iterator[int],
                  headers: str, schedule: Schedule, outcome: LaneOutcome) -> None:
    while (sent := time.time()) < schedule.stop:
        texts, body = bodies[next(order)]
        try:
            seconds, tokens = await timed_post(connection, texts, body, max(schedule.give_up - sent, 0.001), headers)
        except RequestFailed as failure:
            outcome.fail(failure.label, failure.detail)
            if failure.label == TRANSPORT:
                await asyncio.sleep(0.01)  # a dead server would otherwise be hammered in a tight loop
            continue
        outcome.completions.append(Completion(sent, seconds, len(texts), tokens))


async def _lane(host: str, port: int, spec: LaneSpec, ready: Any, go: Any, schedule_box: Any) -> LaneOutcome:
    bodies = [(texts, request_body(texts)) for texts in spec.requests]
    headers = header_lines(spec.headers)
    connections = [Connection(host, port) for _ in range(spec.clients)]
    for connection in connections:
        try:
            await connection.connect()
        except OSError:
            pass  # the first request reconnects and counts the failure
    ready.put(spec.name)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    schedule = Schedule(*schedule_box[:])
    # A loop, as the event loop's timers may fire up to a millisecond early.
    while (delay := schedule.start - time.time()) > 0:
        await asyncio.sleep(delay)
    outcome = LaneOutcome(spec.name, spec.clients)
    cpu_before = time.process_time()
    # One shared cycle: the lane's clients never send the same request at once.
    order = itertools.cycle(range(len(bodies)))
    await asyncio.gather(*(_client(c, bodies, order, headers, schedule, outcome) for c in connections))
    outcome.cpu_s = time.process_time() - cpu_before
    for connection in connections:
        connection.close()
    return outcome


def _lane_main(host: str, port: int, spec: LaneSpec, ready: Any, go: Any, schedule_box: Any, results: Any) -> None:
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results.put(runner.run(_lane(host, port, spec, ready, go, schedule_box)))


def run_lanes(host: str, port: int, lanes: list[LaneSpec], seconds: float, drain_s: float,
              on_start: Callable[[Schedule], None] | None = None) -> tuple[Schedule, list[LaneOutcome]]:
    """Every lane sends for `seconds` from one common start; answers are awaited up to
    `drain_s` longer. `on_start` gets the schedule once all lanes are connected, just
    before the start."""
    context = multiprocessing.get_context("spawn")  # no inherited event loop or server state
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    schedule_box = context.Array("d", 3)
    workers = [context.Process(target=_lane_main, args=(host, port, spec, ready, go, schedule_box, results),
                               daemon=True) for spec in lanes]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for _ in workers:
            get_from(ready, workers, deadline)
        # A common start a little ahead, so no lane gets a head start from waking first.
        start = time.time() + 0.05
        schedule = Schedule(start, start + seconds, start + seconds + drain_s)
        if on_start is not None:
            on_start(schedule)
        schedule_box[:] = [schedule.start, schedule.stop, schedule.give_up]
        go.set()
        deadline = time.monotonic() + seconds + drain_s + READY_TIMEOUT_S
        outcomes: list[LaneOutcome] = [get_from(results, workers, deadline) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10.0)
            if worker.is_alive():
                worker.kill()
    by_name = {outcome.name: outcome for outcome in outcomes}
    return schedule, [by_name[spec.name] for spec in lanes]
