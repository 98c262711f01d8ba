"""Several router fronts and one queue owner process (--router-workers 2, issue 12),
with real processes: admission, cancellation and metrics are server-wide.

Each request below goes out on a connection of its own, so the kernel spreads
them over both fronts (they accept on one shared socket). What reached the
engine is read from the backend process itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import BULK, RunningServer, embed_on_a_raw_socket, start_server, wait_for

LONG_TEXT = " ".join(["retrieval augmented generation pipelines embed passages"] * 16)  # ~100 tokens
CAPACITY = 100
BACKLOG = 80  # inputs of the blocking requests: 2 x 40, one per backend batch


@pytest.fixture(scope="module")
def split_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # One input per batch makes a backlog that takes seconds to drain.
    args = ("--router-workers", "2", "--max-batch-requests", "1", "--max-client-batch-size", "100",
            "--max-concurrent-requests", str(CAPACITY))
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("split")) as running:
        yield running


def _post_fresh(url: str, path: str, body: dict[str, object]) -> httpx.Response:
    # No shared client: a new connection, which any front may accept.
    return httpx.post(f"{url}{path}", json=body, timeout=300)


async def _fire_fresh(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async def one(body: dict[str, object]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=300) as client:
            return await client.post(f"{url}/embed", json=body)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


class Backlog:
    """Two requests of 40 long inputs each, running one input per batch for seconds."""

    def __init__(self, server: RunningServer) -> None:
        self.statuses: list[int] = []
        self._server = server
        bodies: list[dict[str, object]] = [{"inputs": [LONG_TEXT] * (BACKLOG // 2)} for _ in range(2)]
        self._thread = threading.Thread(
            target=lambda: self.statuses.extend(r.status_code for r in asyncio.run(_fire_fresh(server.url, bodies)))
        )

    def __enter__(self) -> Backlog:
        queued_before = self._server.metric("te_request_input_length_count")
        self._thread.start()
        wait_for(lambda: self._server.metric("te_request_input_length_count") >= queued_before + BACKLOG, 60,
                 "the backlog queued")
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=300)
        assert self.statuses == [200, 200]


def test_embed_through_the_owner_matches_one_router(split_server: RunningServer) -> None:
    texts = ["a first text", "another, longer text about embeddings"]
    rows = [_post_fresh(split_server.url, "/embed", {"inputs": texts}).json() for _ in range(4)]
    assert all(np.allclose(row, rows[0], atol=1e-6) for row in rows)
    tokens = _post_fresh(split_server.url, "/embed_all", {"inputs": texts[0]}).json()
    assert np.asarray(tokens).shape[:2] == (1, 5)


def test_permits_are_server_wide(split_server: RunningServer) -> None:
    server = split_server
    with Backlog(server):
        # 20 permits are left server-wide: one burst request of 16 fits, none after it.
        # Per-front permits would admit them all (two fronts of 100 each).
        burst = asyncio.run(_fire_fresh(server.url, [{"inputs": [f"burst {i}"] * 16} for i in range(6)]))
    statuses = sorted(r.status_code for r in burst)
    assert statuses == [200, 429, 429, 429, 429, 429]
    for response in burst:
        if response.status_code == 429:
            assert response.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}
    assert _post_fresh(server.url, "/embed", {"inputs": ["x"] * 100}).status_code == 200  # all permits back


def test_a_gone_clients_inputs_never_reach_the_backend(split_server: RunningServer) -> None:
    server = split_server
    port = int(server.url.rsplit(":", 1)[1])
    sequences_before = server.backend_counters().sequences_run
    dropped_before = server.metric('te_request_failure{err="dropped"}')
    with Backlog(server):
        queued_before = server.metric("te_request_input_length_count")
        victims = [embed_on_a_raw_socket(port, [f"victim {i}"], BULK) for i in range(15)]
        wait_for(lambda: server.metric("te_request_input_length_count") >= queued_before + 15, 60, "victims queued")
        assert server.metric("te_queue_size") > 15, "the victims must still be waiting behind the backlog"
        for sock in victims:
            sock.close()
        wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= dropped_before + 15, 60, "dropped")
    assert server.backend_counters().sequences_run - sequences_before == BACKLOG
    assert server.metric('te_request_failure{err="dropped"}') == dropped_before + 15
    assert server.metric("te_queue_size") == 0


def test_metrics_totals_are_exact_on_every_front(split_server: RunningServer) -> None:
    server = split_server
    before = server.metric("te_request_count")
    success_before = server.metric("te_request_success")
    embedded_before = server.metric("te_embed_success")
    for i in range(30):
        assert _post_fresh(server.url, "/embed", {"inputs": [f"text {i}", "two"]}).status_code == 200
    # Each metrics read is a new connection too: whichever front answers, the totals are exact.
    for _ in range(6):
        assert server.metric("te_request_count") == before + 30
        assert server.metric("te_request_success") == success_before + 30
        assert server.metric("te_embed_success") == embedded_before + 60
    assert server.metric("te_batch_next_size_count") >= 60  # the owner's own histograms are in too


def test_grpc_through_any_front(split_server: RunningServer) -> None:
    http_row = _post_fresh(split_server.url, "/embed", {"inputs": "grpc text"}).json()[0]
    for _ in range(4):
        with grpc.insecure_channel(split_server.grpc_target) as channel:
            stub = tei_pb2_grpc.EmbedStub(channel)
            single = stub.Embed(tei_pb2.EmbedRequest(inputs="grpc text"), timeout=60)
            assert np.allclose(single.embeddings, http_row, atol=1e-6)
            streamed = list(stub.EmbedStream(iter([tei_pb2.EmbedRequest(inputs=f"s{i}") for i in range(5)]),
                                             timeout=60))
            assert len(streamed) == 5


def test_grpc_stream_items_wait_for_permits_at_the_owner(split_server: RunningServer) -> None:
    with Backlog(split_server):
        # 20 permits are left server-wide: 30 stream items of one input each cannot all
        # be admitted now. They wait at the owner, first come first served, instead of
        # failing with RESOURCE_EXHAUSTED as a unary call would.
        with grpc.insecure_channel(split_server.grpc_target) as channel:
            stub = tei_pb2_grpc.EmbedStub(channel)
            items = iter([tei_pb2.EmbedRequest(inputs=f"stream item {i}") for i in range(30)])
            streamed = list(stub.EmbedStream(items, timeout=300))
    assert len(streamed) == 30
    assert all(len(item.embeddings) == 384 for item in streamed)


def test_a_lost_queue_owner_fails_requests_at_once_and_stops_the_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    args = ("--router-workers", "2", "--max-batch-requests", "1", "--max-client-batch-size", "100")
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("ownerlost"), expect_clean_exit=False) as server:
        owner_pids = [pid for pid in server.child_pids("router") if b"embedserve.router.owner" in _cmdline(pid)]
        assert len(owner_pids) == 1
        results: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: results.extend(asyncio.run(_fire_fresh(server.url, [{"inputs": [LONG_TEXT] * 30}])))
        )
        queued_before = server.metric("te_request_input_length_count")
        waiting.start()
        wait_for(lambda: server.metric("te_request_input_length_count") >= queued_before + 30, 60, "queued")
        os.kill(owner_pids[0], signal.SIGKILL)
        waiting.join(timeout=60)
        assert [r.status_code for r in results] == [503]
        assert results[0].json()["error_type"] == "Unhealthy"
        server.process.wait(timeout=60)
        assert server.process.returncode != 0
        assert "lost the link to the queue owner" in server.log()


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read()
