"""Percentiles, windows, alternation and per-policy summaries of a query-under-bulk run."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from bench.lane_stats import LatencySummary, Window, alternate, lane_figures, percentile, summarize
from bench.priority_report import ratios
from bench.timed_load import Completion, LaneOutcome
from tests.bench.phase_samples import suite


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


def test_summaries_pool_latency_and_average_throughput() -> None:
    summaries = {(s.config, s.phase): s for s in summarize(suite())}
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
