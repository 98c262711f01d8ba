"""Short and x-priority: high work overtakes bulk work (issue 13), with real processes.

The servers run one input per backend batch, so a backlog of long inputs takes
seconds to drain and its progress can be read from the backend process itself
(`sequences_run`): a query that overtakes it is answered while most of it has
not run; under `--queue-policy fifo` the same query waits for all of it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import httpx
import pytest

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import RunningServer, start_server, wait_for

LONG_TEXT = " ".join(["retrieval augmented generation pipelines embed passages"] * 16)  # ~100 tokens
BACKLOG = 60  # inputs: 3 requests of 20, each far over --interactive-max-tokens
QUERY = "what is retrieval augmented generation?"
SERVER_ARGS = ("--max-batch-requests", "1", "--max-client-batch-size", "100")


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-router", "two-fronts"])
def priority_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(*SERVER_ARGS, "--router-workers", request.param, tmp_dir=tmp_path_factory.mktemp("lanes")) as running:
        yield running


@pytest.fixture(scope="module")
def fifo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(*SERVER_ARGS, "--queue-policy", "fifo", tmp_dir=tmp_path_factory.mktemp("fifo")) as running:
        yield running


class Backlog:
    """Bulk requests of long inputs, running one input per batch, sent from a thread."""

    def __init__(self, server: RunningServer, headers: dict[str, str] | None = None) -> None:
        self.statuses: list[int] = []
        self._server = server
        self._headers = headers or {}
        self._thread = threading.Thread(target=lambda: self.statuses.extend(asyncio.run(self._send())))

    async def _send(self) -> list[int]:
        async with httpx.AsyncClient(timeout=300) as client:
            replies = await asyncio.gather(*(
                client.post(f"{self._server.url}/embed", json={"inputs": [LONG_TEXT] * (BACKLOG // 3)},
                            headers=self._headers)
                for _ in range(3)
            ))
        return [reply.status_code for reply in replies]

    def __enter__(self) -> Backlog:
        self.ran_before = self._server.backend_counters().sequences_run
        queued_before = self._server.metric("te_request_input_length_count")
        self._thread.start()
        wait_for(lambda: self._server.metric("te_request_input_length_count") >= queued_before + BACKLOG, 60,
                 "the backlog queued")
        return self

    def ran(self) -> int:
        """Inputs the backend has run since the backlog was sent."""
        return self._server.backend_counters().sequences_run - self.ran_before

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=300)
        assert self.statuses == [200, 200, 200]


def test_a_short_query_is_answered_before_the_backlog_drains(priority_server: RunningServer) -> None:
    before = priority_server.metric("embedserve_interactive_queue_duration_count")
    with Backlog(priority_server) as backlog:
        reply = httpx.post(f"{priority_server.url}/embed", json={"inputs": QUERY}, timeout=300)
        ran_when_answered = backlog.ran()
    assert reply.status_code == 200
    # The query ran after at most the few bulk inputs already sent to the backend.
    assert ran_when_answered < BACKLOG // 2, ran_when_answered
    assert priority_server.metric("embedserve_interactive_queue_duration_count") == before + 1
    assert priority_server.metric("embedserve_bulk_queue_duration_count") >= 3


def test_grpc_metadata_high_overtakes_and_low_waits(priority_server: RunningServer) -> None:
    with grpc.insecure_channel(priority_server.grpc_target) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        with Backlog(priority_server) as backlog:
            # A request far over --interactive-max-tokens, marked high: interactive.
            stub.Embed(tei_pb2.EmbedRequest(inputs=LONG_TEXT * 3, truncate=True), metadata=(("x-priority", "high"),), timeout=300)
            assert backlog.ran() < BACKLOG // 2
        with Backlog(priority_server) as backlog:
            # A short query marked low queues behind the bulk work.
            stub.Embed(tei_pb2.EmbedRequest(inputs=QUERY), metadata=(("x-priority", "low"),), timeout=300)
            assert backlog.ran() >= BACKLOG


def test_fifo_policy_keeps_arrival_order(fifo_server: RunningServer) -> None:
    with Backlog(fifo_server) as backlog:
        reply = httpx.post(f"{fifo_server.url}/embed", json={"inputs": QUERY}, timeout=300)
        ran_when_answered = backlog.ran()
    assert reply.status_code == 200
    assert ran_when_answered >= BACKLOG
    assert fifo_server.metric("embedserve_interactive_queue_duration_count") == 0


def test_bulk_work_finishes_under_a_flood_of_queries(priority_server: RunningServer) -> None:
    stop = threading.Event()
    answered: list[int] = []

    async def flood() -> None:
        async with httpx.AsyncClient(timeout=300) as client:
            async def one_client() -> None:
                while not stop.is_set():
                    answered.append((await client.post(f"{priority_server.url}/embed", json={"inputs": QUERY})).status_code)

            await asyncio.gather(*(one_client() for _ in range(16)))

    flooding = threading.Thread(target=lambda: asyncio.run(flood()))
    flooding.start()
    try:
        wait_for(lambda: len(answered) >= 20, 120, "the flood of queries running")
        bulk = httpx.post(f"{priority_server.url}/embed", json={"inputs": [LONG_TEXT] * 20}, timeout=300)
        assert bulk.status_code == 200
        # Finished while the flood still ran: bulk kept its share.
        assert not stop.is_set() and flooding.is_alive()
    finally:
        stop.set()
        flooding.join(timeout=300)
    assert set(answered) == {200}


def test_priority_header_is_validated(priority_server: RunningServer) -> None:
    reply = httpx.post(f"{priority_server.url}/embed", json={"inputs": QUERY}, headers={"x-priority": "urgent"})
    assert reply.status_code == 422
    assert reply.json() == {"error": "`x-priority` must be `high` or `low`, got 'urgent'", "error_type": "Validation"}
    openai = httpx.post(f"{priority_server.url}/v1/embeddings", json={"input": QUERY}, headers={"x-priority": "soon"})
    assert openai.status_code == 422 and "x-priority" in openai.json()["message"]
    assert httpx.post(f"{priority_server.url}/embed", json={"inputs": QUERY}, headers={"x-priority": "High"}).status_code == 200
    with grpc.insecure_channel(priority_server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            tei_pb2_grpc.EmbedStub(channel).Embed(
                tei_pb2.EmbedRequest(inputs=QUERY), metadata=(("x-priority", "urgent"),), timeout=60
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-priority" in (info.value.details() or "")
