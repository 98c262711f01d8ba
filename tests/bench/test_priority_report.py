"""The query-under-bulk report: issue 13's ratios and verdicts, the tables, the JSON."""

from __future__ import annotations

import json

import pytest

from bench.lane_stats import summarize
from bench.priority_report import format_report, ratios, to_json
from tests.bench.phase_samples import CONFIG, phase_figures, suite


def test_flood_falls_back_to_the_query_phase_without_bulk_only() -> None:
    phases = [p for p in suite() if p.phase != "bulk-only"]
    r = ratios(summarize(phases))
    assert r.flood_reference == "query" and r.flood_vs_reference["fifo"] == pytest.approx(20 / 63)


def test_report_shows_the_issue_figures_and_verdicts() -> None:
    text = format_report(suite(), CONFIG)
    assert "| config | run | bulk texts/s | bulk p50 / p99 ms | query p50 / p99 / max ms |" in text
    assert "| fifo | 1 | 60.0 | 1,000 / 2,000 | 900 / 3,000 / 3,000 | 3 | 1.80 | 33.3 | 0.10 | 0 |" in text
    assert "| **priority** | all 2 | **60.0** |" in text
    assert "query p99, fifo: 5,000 ms\n" in text
    assert "query p99, priority: 90 ms (issue 13: <= 100 ms: met)" in text
    assert "bulk throughput priority / fifo: 0.952 (issue 13: >= 0.95: met)" in text
    assert "bulk texts per server CPU-second priority / fifo: 0.952 (less moved" in text
    assert "flood, fifo: bulk requests still finish; bulk 20.0 texts/s = 0.29 of bulk-only; bulk tokens 0.25" in text
    assert "flood, priority: BULK STARVED (2 finished, 3 timed out)" in text
    missed = format_report([phase_figures("fifo", 1, "query", 66.0, (0.5,)), phase_figures("priority", 1, "query", 60.0, (0.2,))],
                           CONFIG)
    assert "(issue 13: <= 100 ms: MISSED)" in missed and "0.909 (issue 13: >= 0.95: MISSED)" in missed
    assert "Flood" not in missed and "Idle" not in missed
    idle = format_report([phase_figures("priority", 1, "idle", 0.0, (0.004, 0.006, 0.009))], CONFIG)
    assert "| priority | 1 | 6 / 9 / 9 | 3 | 0 | 1.80 | 0.10 | 0 |" in idle
    assert "| **priority** | all 1 | **6 / 9 / 9** | 3 | 0 | 1.80 | 0.10 | 0 |" in idle


def test_json_has_no_nan_and_no_raw_latencies() -> None:
    phases = suite() + [phase_figures("fifo", 3, "query", 10.0, ())]
    record = to_json(phases, CONFIG)
    text = json.dumps(record, allow_nan=False)
    assert "latencies_s" not in text
    assert record["phases"][-1]["query"]["latency"]["p99_ms"] is None
    assert record["ratios"]["bulk_throughput_on_over_off"] == pytest.approx(60.0 / ((60 + 66 + 10) / 3))
    assert record["targets"] == {"query_p99_ms": 100.0, "bulk_throughput_ratio": 0.95}
