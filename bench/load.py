"""Closed-loop load: N asyncio clients draining one shared queue of requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

REQUEST_TIMEOUT_S = 120.0


@dataclass
class Failure:
    request_index: int
    status: int | None  # None: no HTTP response at all
    detail: str


class Throughput:
    """texts/s and tokens/s of any timed run with those three counts."""

    texts: int
    seconds: float
    tokens: int

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class LoadResult(Throughput):
    texts: int
    seconds: float
    tokens: int
    latencies_s: list[float]
    failures: list[Failure]
    # Per request index, so the vectors can be lined up with the corpus order.
    embeddings: dict[int, np.ndarray] = field(default_factory=dict)

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return float(np.quantile(np.asarray(self.latencies_s), quantile)) * 1000.0


async def _post(client: httpx.AsyncClient, texts: list[str]) -> httpx.Response:
    return await client.post("/embed", json={"inputs": texts})


def _check(index: int, texts: list[str], response: httpx.Response) -> tuple[Failure | None, np.ndarray | None]:
    if response.status_code != 200:
        return Failure(index, response.status_code, response.text[:300]), None
    vectors = np.asarray(response.json(), dtype=np.float32)
    # A 200 with the wrong number of vectors would silently inflate texts/s.
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        return Failure(index, 200, f"expected {len(texts)} vectors, got shape {vectors.shape}"), None
    return None, vectors


async def _client_loop(client: httpx.AsyncClient, queue: asyncio.Queue[tuple[int, list[str]]],
                       result: LoadResult) -> None:
    while True:
        try:
            index, texts = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        started = time.perf_counter()
        try:
            response = await _post(client, texts)
        except httpx.HTTPError as exc:
            result.failures.append(Failure(index, None, f"{type(exc).__name__}: {exc}"))
            continue
        result.latencies_s.append(time.perf_counter() - started)
        result.tokens += int(response.headers.get("x-compute-tokens", 0))
        failure, vectors = _check(index, texts, response)
        if failure is not None:
            result.failures.append(failure)
        else:
            result.embeddings[index] = vectors  # type: ignore[assignment]


def _client(base_url: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S)


async def _run(base_url: str, requests: list[list[str]], concurrency: int) -> LoadResult:
    # Every request is queued before the clients start, so each text is sent exactly once.
    queue: asyncio.Queue[tuple[int, list[str]]] = asyncio.Queue()
    for index, texts in enumerate(requests):
        queue.put_nowait((index, texts))
    result = LoadResult(texts=sum(len(r) for r in requests), seconds=0.0, tokens=0, latencies_s=[], failures=[])
    async with _client(base_url, concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(_client_loop(client, queue, result) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    # Only texts that came back as vectors count, so failures cannot inflate texts/s.
    result.texts = sum(len(requests[index]) for index in result.embeddings)
    return result


def run_load(base_url: str, requests: list[list[str]], concurrency: int) -> LoadResult:
    return asyncio.run(_run(base_url, requests, concurrency))


@dataclass(frozen=True)
class ShardResult:
    """One load process's share, small enough to send back between processes."""

    texts: int
    tokens: int
    failures: list[Failure]
    latencies_s: list[float]
    started: float  # time.time(), comparable across processes
    finished: float


def _run_shard(base_url: str, requests: list[list[str]], concurrency: int) -> ShardResult:
    started = time.time()
    result = asyncio.run(_run(base_url, requests, concurrency))
    return ShardResult(result.texts, result.tokens, result.failures, result.latencies_s, started, time.time())


def run_load_processes(base_url: str, requests: list[list[str]], concurrency: int, processes: int) -> LoadResult:
    """The same closed loop from several processes, for servers that outrun one Python client.
    Vectors are checked in each process but not sent back. `bench.mp_load` is the lighter
    generator (raw HTTP/1.1, base64, failures by status) for saturating a server."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shards = [requests[i::processes] for i in range(processes)]
    per_process = max(1, concurrency // processes)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_run_shard, [base_url] * processes, shards, [per_process] * processes))
    seconds = max(r.finished for r in results) - min(r.started for r in results)
    failures = [failure for r in results for failure in r.failures]
    return LoadResult(texts=sum(r.texts for r in results), seconds=seconds, tokens=sum(r.tokens for r in results),
                      latencies_s=[s for r in results for s in r.latencies_s], failures=failures)
