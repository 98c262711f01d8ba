"""Prometheus metrics under TEI's `te_*` names, rendered in the text format.

A small in-house registry, because TEI's counters carry no `_total` suffix and
client libraries add one; exact names keep existing dashboards working.
One `Metrics` object lives on the app state: no module-level registry.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# 1e-5 s x 1.5^k for k = 1..35: ~15 us to ~14.6 s (TEI router/src/prometheus.rs).
DURATION_BUCKETS = tuple(1e-5 * 1.5**k for k in range(1, 36))
BATCH_SIZE_BUCKETS = tuple(float(2**k) for k in range(13))
BATCH_TOKEN_BUCKETS = tuple(float(2**k) for k in range(21))

Labels = tuple[tuple[str, str], ...]


class ResponseTimes(Protocol):
    @property
    def total_time_s(self) -> float: ...
    @property
    def tokenization_time_s(self) -> float: ...
    @property
    def queue_time_s(self) -> float: ...
    @property
    def inference_time_s(self) -> float: ...


def _format_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = list(labels) + ([extra] if extra else [])
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


def _labels_key(labels: dict[str, str]) -> Labels:
    # Most series have no label or one: skip the sort then.
    if len(labels) < 2:
        return tuple(labels.items())
    return tuple(sorted(labels.items()))


def _header(name: str, help_text: str, kind: str) -> Iterable[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Counter:
    name: str
    help: str
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _labels_key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self.values.get(_labels_key(labels), 0.0)

    def render(self) -> Iterable[str]:
        yield from _header(self.name, self.help, "counter")
        yield from self.series()

    def series(self, model: Labels = ()) -> Iterable[str]:
        for labels, value in self.values.items():
            yield f"{self.name}{_format_labels(model + labels)} {_format_value(value)}"


@dataclass
class Gauge:
    name: str
    help: str
    current: float = 0.0

    def set(self, value: float) -> None:
        self.current = value

    def render(self) -> Iterable[str]:
        yield from _header(self.name, self.help, "gauge")
        yield from self.series()

    def series(self, model: Labels = ()) -> Iterable[str]:
        yield f"{self.name}{_format_labels(model)} {_format_value(self.current)}"


@dataclass
class Histogram:
    name: str
    help: str
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0
    maximum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float, count: int = 1) -> None:
        """`count` observations of the same `value` (a request's inputs share its times)."""
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += count
        self.total += value * count
        self.observations += count
        if value > self.maximum:
            self.maximum = value

    def render(self) -> Iterable[str]:
        yield from _header(self.name, self.help, "histogram")
        yield from self.series()

    def series(self, model: Labels = ()) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            yield f"{self.name}_bucket{_format_labels(model, ('le', _format_value(bound)))} {cumulative}"
        yield f"{self.name}_bucket{_format_labels(model, ('le', '+Inf'))} {self.observations}"
        yield f"{self.name}_sum{_format_labels(model)} {_format_value(self.total)}"
        yield f"{self.name}_count{_format_labels(model)} {self.observations}"


class PhaseDurations:
    """te_<family>_duration and its tokenization/queue/inference parts, per input."""

    def __init__(self, prefix: str) -> None:
        self.total = Histogram(f"{prefix}_duration", "Duration per input (s)", DURATION_BUCKETS)
        self.tokenization = Histogram(f"{prefix}_tokenization_duration", "Tokenization (s)", DURATION_BUCKETS)
        self.queue = Histogram(f"{prefix}_queue_duration", "Queue wait (s)", DURATION_BUCKETS)
        self.inference = Histogram(f"{prefix}_inference_duration", "Inference (s)", DURATION_BUCKETS)

    def observe(self, meta: ResponseTimes, count: int = 1) -> None:
        """Once per input: `count` inputs of one request share `meta`."""
        self.total.observe(meta.total_time_s, count)
        self.tokenization.observe(meta.tokenization_time_s, count)
        self.queue.observe(meta.queue_time_s, count)
        self.inference.observe(meta.inference_time_s, count)

    def all(self) -> tuple[Histogram, ...]:
        return (self.total, self.tokenization, self.queue, self.inference)


class Metrics:
    def __init__(self, max_input_length: int) -> None:
        length_buckets = tuple(float(2**k) for k in range(0, 32) if 2**k <= max(1, max_input_length))
        self.request_count = Counter("te_request_count", "Inference requests")
        self.request_success = Counter("te_request_success", "Successful inference requests")
        self.request_failure = Counter("te_request_failure", "Failed inference requests by cause")
        self.embed_count = Counter("te_embed_count", "Inputs entering embed")
        self.embed_success = Counter("te_embed_success", "Inputs embedded")
        self.predict_count = Counter("te_predict_count", "Inputs entering predict")
        self.predict_success = Counter("te_predict_success", "Inputs predicted")
        self.queue_size = Gauge("te_queue_size", "Inputs waiting in the batch queue")
        self.batch_next_size = Histogram("te_batch_next_size", "Inputs per backend batch", BATCH_SIZE_BUCKETS)
        self.batch_next_tokens = Histogram("te_batch_next_tokens", "Tokens per backend batch (sum)", BATCH_TOKEN_BUCKETS)
        self.backend_batch_tokens = Histogram(
            "embedserve_backend_batch_tokens",
            "Tokens per batch under the backend's own accounting (padded backends: max_len x n)",
            BATCH_TOKEN_BUCKETS,
        )
        self.backend_model_cpu_seconds = Counter(
            "embedserve_backend_model_cpu_seconds", "CPU seconds the backends' model threads spent")
        self.request_input_length = Histogram("te_request_input_length", "Tokens per input", length_buckets)
        self.request_duration = Histogram("te_request_duration", "Request duration (s)", DURATION_BUCKETS)
        self.request_tokenization_duration = Histogram(
            "te_request_tokenization_duration", "Tokenization duration (s)", DURATION_BUCKETS
        )
        self.request_queue_duration = Histogram("te_request_queue_duration", "Queue duration (s)", DURATION_BUCKETS)
        # te_request_queue_duration split by lane (router/lanes.py).
        self.interactive_queue_duration = Histogram(
            "embedserve_interactive_queue_duration", "Queue duration of interactive requests (s)", DURATION_BUCKETS
        )
        self.bulk_queue_duration = Histogram(
            "embedserve_bulk_queue_duration", "Queue duration of bulk requests (s)", DURATION_BUCKETS
        )
        self.request_inference_duration = Histogram(
            "te_request_inference_duration", "Inference duration (s)", DURATION_BUCKETS
        )
        self.embed_durations = PhaseDurations("te_embed")
        self.predict_durations = PhaseDurations("te_predict")

    def render(self) -> str:
        lines: list[str] = []
        for metric in _instruments(self):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


def render_models(models: Sequence[tuple[str, Metrics]]) -> str:
    """/metrics of every served model: one model renders as ever; with several,
    each series once per model with a `model="<name>"` label, under one header."""
    if len(models) == 1:
        return models[0][1].render()
    per_model = [(name, list(_instruments(metrics))) for name, metrics in models]
    lines: list[str] = []
    for position, first in enumerate(per_model[0][1]):
        lines.extend(_header(first.name, first.help, _KINDS[type(first)]))
        for name, instruments in per_model:
            lines.extend(instruments[position].series((("model", _escape(name)),)))
    return "\n".join(lines) + "\n"


_KINDS: dict[type, str] = {}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---- server-wide totals across processes (issue 12: several fronts, one queue owner)
#
# Every process counts into its own `Metrics`; a front answering /metrics asks
# the queue owner, which collects a snapshot from every front and merges them
# with its own. A snapshot is plain data (msgpack-able): per metric name, a
# counter's [[labels, value], ...], a gauge's value, a histogram's
# [bucket counts, sum, count, max]. Gauges add up: only the owner sets one.


def _instruments(metrics: Metrics) -> Iterable[Counter | Gauge | Histogram]:
    for metric in vars(metrics).values():
        if isinstance(metric, (Counter, Gauge, Histogram)):
            yield metric
        elif isinstance(metric, PhaseDurations):
            yield from metric.all()


def snapshot(metrics: Metrics) -> dict[str, object]:
    out: dict[str, object] = {}
    for metric in _instruments(metrics):
        if isinstance(metric, Counter):
            out[metric.name] = [[list(map(list, labels)), value] for labels, value in metric.values.items()]
        elif isinstance(metric, Gauge):
            out[metric.name] = metric.current
        else:
            out[metric.name] = [list(metric.counts), metric.total, metric.observations, metric.maximum]
    return out


def merge(metrics: Metrics, part: dict[str, object]) -> None:
    """Add a snapshot (from `snapshot`, maybe of another process) into `metrics`."""
    for metric in _instruments(metrics):
        data = part.get(metric.name)
        if data is None:
            continue
        if isinstance(metric, Counter):
            assert isinstance(data, list)
            for labels, value in data:
                key = tuple((str(k), str(v)) for k, v in labels)
                metric.values[key] = metric.values.get(key, 0.0) + float(value)
        elif isinstance(metric, Gauge):
            assert isinstance(data, (int, float))
            metric.current += data
        else:
            assert isinstance(data, list)
            counts, total, observations, maximum = data
            if len(counts) != len(metric.counts):
                continue  # another bucket layout: never between processes of one server
            metric.counts = [a + int(b) for a, b in zip(metric.counts, counts)]
            metric.total += float(total)
            metric.observations += int(observations)
            metric.maximum = max(metric.maximum, float(maximum))


_KINDS.update({Counter: "counter", Gauge: "gauge", Histogram: "histogram"})


def snapshot_models(models: Sequence[Metrics]) -> dict[str, object]:
    """Every model's snapshot, keyed by its index (what crosses the owner link)."""
    return {str(index): snapshot(metrics) for index, metrics in enumerate(models)}


def merge_models(models: Sequence[Metrics], part: dict[str, object]) -> None:
    for index, metrics in enumerate(models):
        data = part.get(str(index))
        if isinstance(data, dict):
            merge(metrics, data)
