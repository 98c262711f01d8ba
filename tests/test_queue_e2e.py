"""The batch queue seen from outside: budgets, disconnects and overload, with real processes.

What reached the engine is read from the backend process itself (its Health
counters, over its Unix socket), not from the router's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BULK, RunningServer, embed_on_a_raw_socket, start_server, wait_for
from tests.texts import varied_texts

LONG_TEXT = " ".join(["retrieval augmented generation pipelines embed passages"] * 40)  # > 256 tokens


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ("--max-batch-tokens", "700", "--max-concurrent-requests", "48", "--max-client-batch-size", "64")
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("budget")) as running:
        yield running


@pytest.fixture(scope="module")
def slow_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # One input per batch makes a backlog that takes seconds to drain.
    args = ("--max-batch-requests", "1", "--max-client-batch-size", "64", "--max-concurrent-requests", "4096")
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("slowq")) as running:
        yield running


async def _fire(url: str, bodies: list[dict[str, object]], concurrency: int) -> list[int]:
    async with httpx.AsyncClient(timeout=300) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(body: dict[str, object]) -> int:
            async with semaphore:
                return (await client.post(f"{url}/embed", json=body)).status_code

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def test_no_backend_batch_exceeds_max_batch_tokens(budget_server: RunningServer) -> None:
    texts = varied_texts(64, seed=3) + [LONG_TEXT] * 16
    bodies: list[dict[str, object]] = [{"inputs": texts[i : i + 4]} for i in range(0, len(texts), 4)] * 3
    statuses = asyncio.run(_fire(budget_server.url, bodies, concurrency=12))
    assert set(statuses) == {200}
    counters = budget_server.backend_counters()
    assert counters.sequences_run >= 240
    assert counters.batches_run < counters.sequences_run, "inputs were never batched together"
    # Padded backend: the backend's own cost is max_len x n, and it never passed the budget.
    assert 0 < counters.max_batch_tokens_seen <= 700
    assert budget_server.metric("te_request_failure") == 0


def test_over_capacity_gets_429_at_once(budget_server: RunningServer) -> None:
    over = httpx.post(f"{budget_server.url}/embed", json={"inputs": ["x"] * 49}, timeout=30)
    assert over.status_code == 429
    assert over.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}
    assert httpx.post(f"{budget_server.url}/embed", json={"inputs": ["x"] * 48}, timeout=30).status_code == 200


def test_concurrent_overload_answers_only_200_or_429(budget_server: RunningServer) -> None:
    bodies: list[dict[str, object]] = [{"inputs": [LONG_TEXT] * 8} for _ in range(24)]
    statuses = asyncio.run(_fire(budget_server.url, bodies, concurrency=24))
    assert set(statuses) <= {200, 429}
    assert 429 in statuses and 200 in statuses
    assert httpx.get(f"{budget_server.url}/health").status_code == 200


def test_disconnected_clients_inputs_never_reach_backend(slow_queue_server: RunningServer) -> None:
    server = slow_queue_server
    port = int(server.url.rsplit(":", 1)[1])
    sequences_before = server.backend_counters().sequences_run
    enqueued_before = server.metric("te_request_input_length_count")

    blocker_bodies: list[dict[str, object]] = [{"inputs": [LONG_TEXT] * 40} for _ in range(6)]
    blocker_statuses: list[int] = []
    blocker = threading.Thread(
        target=lambda: blocker_statuses.extend(asyncio.run(_fire(server.url, blocker_bodies, concurrency=6)))
    )
    blocker.start()
    wait_for(lambda: server.metric("te_request_input_length_count") >= enqueued_before + 240, 60, "the backlog")

    # 500 clients, each with one input queued behind the backlog, then all gone.
    victims = [embed_on_a_raw_socket(port, [f"victim {i}"], BULK) for i in range(500)]
    wait_for(lambda: server.metric("te_request_input_length_count") >= enqueued_before + 740, 60, "victims queued")
    assert server.metric("te_queue_size") > 500, "the victims must still be waiting behind the backlog"
    for sock in victims:
        sock.close()

    blocker.join(timeout=300)
    assert blocker_statuses == [200] * 6
    wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= 500, 60, "dropped entries")

    assert server.backend_counters().sequences_run - sequences_before == 240
    assert server.metric('te_request_failure{err="dropped"}') == 500
    assert server.metric("te_queue_size") == 0
    assert httpx.post(f"{server.url}/embed", json={"inputs": "after"}, timeout=30).status_code == 200


