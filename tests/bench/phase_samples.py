"""Hand-made phase figures for the report and summary tests: two policies, two rounds,
a flood round with a bulk-only reference, one flood where bulk starved."""

from __future__ import annotations

from typing import Any

from bench.lane_stats import LaneFigures, LatencySummary, Phase, PhaseFigures, Policy

CONFIG: dict[str, Any] = {
    "bulk_clients": 16, "texts_per_request": "1-8", "bulk_header": None, "query_clients": 1, "query_words": 8,
    "query_header": None, "server": "--backend onnx", "seconds": 25.0, "flood_clients": 32}


def lane(name: str, texts_per_s: float, latencies_s: tuple[float, ...], tokens: int,
         failures: dict[str, int] | None = None) -> LaneFigures:
    return LaneFigures(lane=name, clients=1, requests=len(latencies_s), texts=int(texts_per_s * 10), tokens=tokens,
                       texts_per_s=texts_per_s, requests_per_s=len(latencies_s) / 10,
                       latency=LatencySummary.of(latencies_s), failures=failures or {}, failure_examples={},
                       client_cpu_s=0.0, latencies_s=latencies_s)


def phase_figures(config: Policy, run: int, phase: Phase, bulk_tps: float, query: tuple[float, ...] | None,
                  bulk_tokens: int = 900, query_tokens: int = 100, bulk_failures: dict[str, int] | None = None
                  ) -> PhaseFigures:
    return PhaseFigures(config=config, run=run, phase=phase, window_s=10.0,
                        bulk=lane("bulk", bulk_tps, (1.0, 2.0), bulk_tokens, bulk_failures),
                        query=None if query is None else lane("query", 0.0, query, query_tokens),
                        server_cores=1.8, other_cores=0.1)


def suite() -> list[PhaseFigures]:
    return [
        phase_figures("fifo", 1, "query", 60.0, (0.8, 0.9, 3.0)),
        phase_figures("fifo", 1, "bulk-only", 70.0, None),
        phase_figures("fifo", 1, "flood", 20.0, (0.5,) * 10, bulk_tokens=300, query_tokens=900),
        phase_figures("priority", 1, "query", 63.0, (0.02, 0.03)),
        phase_figures("priority", 1, "bulk-only", 70.0, None),
        phase_figures("priority", 1, "flood", 0.0, (0.01,) * 10, bulk_tokens=0, bulk_failures={"timeout": 3}),
        phase_figures("fifo", 2, "query", 66.0, (0.7, 5.0)),
        phase_figures("priority", 2, "query", 57.0, (0.04, 0.09)),
    ]
