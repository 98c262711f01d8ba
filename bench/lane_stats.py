"""Figures of one timed phase, cut from its lanes' completions over one window: the
bulk lane's throughput and the query lane's latency over the same seconds."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bench.timed_load import LaneOutcome

# idle: the query client alone; query: the bulk load plus one query client; bulk-only: the
# bulk load alone; flood: the bulk load plus many query clients.
Phase = Literal["idle", "query", "bulk-only", "flood"]
Policy = Literal["fifo", "priority"]  # the server's --queue-policy


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of all values at or
    below it, so a p99 is always a latency some request really had (with under 100
    samples, the max). NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        return cls(count=len(seconds), p50_ms=percentile(seconds, 0.50) * 1000.0,
                   p99_ms=percentile(seconds, 0.99) * 1000.0, max_ms=max(seconds, default=math.nan) * 1000.0)


@dataclass(frozen=True)
class Window:
    """The measured seconds of a phase (time.time()): after the ramp, until the stop."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class LaneFigures:
    lane: str
    clients: int
    # Throughput counts what finished inside the window; latency, what was sent inside
    # it (however long it then took, so a request stuck past the window still counts).
    requests: int
    texts: int
    tokens: int
    texts_per_s: float
    requests_per_s: float
    latency: LatencySummary
    failures: dict[str, int]  # by HTTP status, or transport / timeout / 200-bad-body, whole phase
    failure_examples: dict[str, str]
    client_cpu_s: float
    latencies_s: tuple[float, ...] = field(repr=False)  # kept to pool several runs' percentiles


def lane_figures(outcome: LaneOutcome, window: Window) -> LaneFigures:
    finished = [c for c in outcome.completions if window.start <= c.finished <= window.end]
    sent = [c.seconds for c in outcome.completions if window.start <= c.sent <= window.end]
    texts = sum(c.texts for c in finished)
    return LaneFigures(lane=outcome.name, clients=outcome.clients, requests=len(finished), texts=texts,
                       tokens=sum(c.tokens for c in finished), texts_per_s=texts / window.seconds,
                       requests_per_s=len(finished) / window.seconds, latency=LatencySummary.of(sent),
                       failures=dict(outcome.failures), failure_examples=dict(outcome.failure_examples),
                       client_cpu_s=outcome.cpu_s, latencies_s=tuple(sent))


@dataclass(frozen=True)
class PhaseFigures:
    config: Policy
    run: int  # 1-based round; configurations alternate within a round
    phase: Phase
    window_s: float
    bulk: LaneFigures
    query: LaneFigures | None
    server_cores: float  # the server's processes, all roles, over the window
    other_cores: float  # everything else on the machine but this server and the load: neighbours

    @property
    def bulk_texts_per_cpu_s(self) -> float:
        """Bulk texts per second of server CPU: steadier than texts/s when a neighbour
        takes a varying share of the cores, though blind to a scheduler that idles them."""
        return self.bulk.texts_per_s / self.server_cores if self.server_cores > 0 else math.nan

    @property
    def bulk_token_share(self) -> float | None:
        """Bulk's share of all tokens served in the window."""
        total = self.bulk.tokens + (self.query.tokens if self.query else 0)
        return self.bulk.tokens / total if total else None

    @property
    def failures(self) -> Counter[str]:
        total = Counter(self.bulk.failures)
        if self.query is not None:
            total.update(self.query.failures)
        return total


@dataclass(frozen=True)
class ConfigSummary:
    """One configuration's runs of one phase together: throughput averaged over runs,
    latency percentiles over all their queries pooled."""

    config: Policy
    phase: Phase
    runs: int
    bulk_texts_per_s: float
    bulk_texts_per_cpu_s: float
    server_cores: float
    other_cores: float
    bulk_requests: int
    bulk_latency: LatencySummary
    query: LatencySummary | None
    queries_per_s: float | None
    bulk_token_share: float | None
    failures: dict[str, int]


def summarize(phases: Sequence[PhaseFigures]) -> list[ConfigSummary]:
    """One summary per (configuration, phase), in the order they first ran."""
    keys = dict.fromkeys((p.config, p.phase) for p in phases)
    out: list[ConfigSummary] = []
    for config, phase in keys:
        group = [p for p in phases if (p.config, p.phase) == (config, phase)]
        queries = [p.query for p in group if p.query is not None]
        shares = [s for p in group if (s := p.bulk_token_share) is not None]
        failures: Counter[str] = Counter()
        for p in group:
            failures.update(p.failures)
        out.append(ConfigSummary(
            config=config, phase=phase, runs=len(group),
            bulk_texts_per_s=statistics.fmean(p.bulk.texts_per_s for p in group),
            bulk_texts_per_cpu_s=statistics.fmean(p.bulk_texts_per_cpu_s for p in group),
            server_cores=statistics.fmean(p.server_cores for p in group),
            other_cores=statistics.fmean(p.other_cores for p in group),
            bulk_requests=sum(p.bulk.requests for p in group),
            bulk_latency=LatencySummary.of([s for p in group for s in p.bulk.latencies_s]),
            query=LatencySummary.of([s for q in queries for s in q.latencies_s]) if queries else None,
            queries_per_s=statistics.fmean(q.requests_per_s for q in queries) if queries else None,
            bulk_token_share=statistics.fmean(shares) if shares else None,
            failures=dict(failures)))
    return out


def alternate(runs: int, configs: Sequence[Policy]) -> list[tuple[int, Policy]]:
    """(round, configuration) in the order to run them: A B A B ..., so load from a
    busy neighbour lands on every configuration alike."""
    return [(run, config) for run in range(1, runs + 1) for config in configs]
