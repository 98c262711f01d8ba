"""OpenTelemetry for --otlp-endpoint: spans, W3C propagation, OTLP/gRPC export.

Imported only through proto/tracing/__init__.py, and only when tracing is on.
Facts follow TEI (router/src/logging.rs): service.name from
--otlp-service-name, an always-on sampler (a caller's unsampled `traceparent`
is still traced, as TEI does), a batch span processor, W3C trace context.

The spans of one request, in its caller's trace:
- the request span, named after TEI's handler (`embed`, `rerank`, ...; gRPC:
  TEI's method names), carrying TEI's fields `total_time`, `tokenization_time`,
  `queue_time`, `inference_time` (Rust `Duration` debug format, as TEI records
  them), `compute_chars`, `compute_tokens`;
- `encode`: tokenization (TEI's `Tokenization::encode`);
- per input, `queue` (appended until its batch formed) and `inference` (its
  batch sent until its result came back), made where the queue lives: the
  front, or the queue owner process (--router-workers >= 2).
A batch holds inputs of many requests, so it cannot sit in one request's
trace: each batch gets one span of its own (TEI's backend span name, `embed`
or `predict`), a root linked to the request of every input it carries, and
each input's `inference` span links back to it. One batch span per batch
rather than per input keeps the cost per batch, not per input x batch. The
backend continues the batch span with its `forward` span (`joined`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
# The spans open in this task, outermost first: what JSON log lines show (TEI's `spans`).
_open_spans: ContextVar[tuple[Span, ...]] = ContextVar("embedserve_open_spans", default=())
# Exporting must never hold a request up: a dead collector costs at most this per
# export attempt, in the processor's own thread (OTEL_EXPORTER_OTLP_TIMEOUT overrides it).
DEFAULT_EXPORT_TIMEOUT_S = 5.0
SHUTDOWN_FLUSH_MS = 3000


def rust_duration(seconds: float) -> str:
    """`seconds` as Rust prints a Duration with {:?} (TEI's span fields): 1.5s, 12.3456ms, 350µs."""
    ns = max(0, round(seconds * 1e9))
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if ns >= scale:
            whole, rest = divmod(ns, scale)
            digits = len(str(scale)) - 1
            fraction = f"{rest:0{digits}d}".rstrip("0")
            return f"{whole}.{fraction}{unit}" if fraction else f"{whole}{unit}"
    return f"{ns}ns"


class RequestTimings(Protocol):
    """What the request span records (the router's ResponseMetadata)."""

    @property
    def compute_characters(self) -> int: ...
    @property
    def compute_tokens(self) -> int: ...
    @property
    def total_time_s(self) -> float: ...
    @property
    def tokenization_time_s(self) -> float: ...
    @property
    def queue_time_s(self) -> float: ...
    @property
    def inference_time_s(self) -> float: ...


class _WarnOnceExporter(SpanExporter):
    """The OTLP exporter, its failures logged once per outage instead of per export."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.FAILURE and not self._failing:
            self._failing = True
            logger.warning("cannot export spans to %s; they are dropped until it answers (logged once)",
                           self._endpoint)
        elif result is SpanExportResult.SUCCESS and self._failing:
            self._failing = False
            logger.info("exporting spans to %s again", self._endpoint)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class EntrySpans:
    """One queued input's spans in its request's trace (queue owner side)."""

    __slots__ = ("_tracer", "parent", "_queue")

    def __init__(self, tracer: trace.Tracer, parent: otel_context.Context) -> None:
        self._tracer = tracer
        self.parent = parent
        self._queue: Span | None = tracer.start_span("queue", context=parent)

    def request_link(self) -> Link:
        return Link(trace.get_current_span(self.parent).get_span_context())

    def batched(self) -> None:
        if self._queue is not None:
            self._queue.end()
            self._queue = None

    def dropped(self, reason: str) -> None:
        """It left the queue without running (deadline, client gone)."""
        if self._queue is not None:
            self._queue.set_status(Status(StatusCode.ERROR, reason))
            self.batched()

    def ran(self, started_ns: int, batch: Span | None, error: str | None = None) -> None:
        links = [Link(batch.get_span_context())] if batch is not None else None
        span = self._tracer.start_span("inference", context=self.parent, links=links, start_time=started_ns)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


class BatchTrace:
    """One backend call's span and the traced inputs it carries."""

    __slots__ = ("span", "_entries", "_started_ns")

    def __init__(self, span: Span, entries: Sequence[EntrySpans], started_ns: int) -> None:
        self.span = span
        self._entries = entries
        self._started_ns = started_ns

    def traceparent(self) -> str:
        """The batch span as a W3C traceparent, for the backend's `forward` span."""
        context = self.span.get_span_context()
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def finish(self, error: str | None = None) -> None:
        """The backend answered (or failed with `error`): each input's `inference` span, then the batch's."""
        for entry in self._entries:
            entry.ran(self._started_ns, self.span, error)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


class Tracing:
    def __init__(self, provider: TracerProvider, endpoint: str) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("embedserve")
        self.endpoint = endpoint

    @classmethod
    def start(cls, endpoint: str, service_name: str, process: str) -> Tracing:
        resource = Resource.create({
            "service.name": service_name,
            # Which of the server's processes made the span (router, router-0, router-owner, ...).
            "embedserve.process": process,
            "process.pid": os.getpid(),
        })
        timeout = float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_EXPORT_TIMEOUT_S))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=timeout)
        # The exporter logs each failed attempt; ours says it once (_WarnOnceExporter).
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(logging.CRITICAL)
        provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        provider.add_span_processor(BatchSpanProcessor(_WarnOnceExporter(exporter, endpoint)))
        logger.info("tracing: spans go to %s as service %r", endpoint, service_name)
        return cls(provider, endpoint)

    # ---- the request's own process

    @contextmanager
    def request(self, name: str, traceparent: str | None, tracestate: str | None) -> Iterator[Span]:
        """The request span: a child of the caller's `traceparent` if it sent a valid
        one, else the root of a new trace."""
        carrier = {}
        if traceparent:
            carrier["traceparent"] = traceparent
            if tracestate:
                carrier["tracestate"] = tracestate
        # An explicit empty context: a request never inherits whatever span is current.
        parent = _PROPAGATOR.extract(carrier) if carrier else otel_context.Context()
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        with self._current(span, (span,)):
            yield span

    def answered(self, span: Span, status: int) -> None:
        """The HTTP status on the request span; a server-side failure (5xx) marks it an error."""
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))

    def current_failed(self, message: str) -> None:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, message))

    @contextmanager
    def joined(self, name: str, traceparent: str, attributes: dict[str, int | bool]) -> Iterator[None]:
        """A span of this process in the trace of a span another process sent (`traceparent`)."""
        parent = _PROPAGATOR.extract({"traceparent": traceparent})
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        with self._current(span, (span,)):
            yield

    @contextmanager
    def stage(self, name: str) -> Iterator[Span]:
        span = self._tracer.start_span(name)
        with self._current(span, (*_open_spans.get(), span)):
            yield span

    @contextmanager
    def _current(self, span: Span, open_spans: tuple[Span, ...]) -> Iterator[None]:
        token = otel_context.attach(trace.set_span_in_context(span))
        open_token = _open_spans.set(open_spans)
        try:
            yield
        except BaseException as exc:
            # Not over a status set already: gRPC's abort raises its own exception
            # after the servicer recorded the real error (current_failed).
            status = getattr(span, "status", None)
            if status is None or status.status_code is not StatusCode.ERROR:
                span.set_status(Status(StatusCode.ERROR, getattr(exc, "message", None) or type(exc).__name__))
            raise
        finally:
            _open_spans.reset(open_token)
            otel_context.detach(token)
            span.end()

    def current_traceparent(self) -> str:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent", "")

    def record_request(self, metadata: RequestTimings) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attributes({
            "compute_chars": metadata.compute_characters,
            "compute_tokens": metadata.compute_tokens,
            "total_time": rust_duration(metadata.total_time_s),
            "tokenization_time": rust_duration(metadata.tokenization_time_s),
            "queue_time": rust_duration(metadata.queue_time_s),
            "inference_time": rust_duration(metadata.inference_time_s),
        })

    def log_fields(self) -> dict[str, object]:
        """TEI's JSON log fields for the current span: `span` (innermost) and `spans`
        (outermost first), each its name and recorded fields."""
        open_spans = _open_spans.get()
        if not open_spans:
            return {}
        described = [_describe(span) for span in open_spans]
        return {"span": described[-1], "spans": described}

    # ---- where the queue lives (the front, or the queue owner process)

    def queued(self, traceparent: str) -> EntrySpans:
        return EntrySpans(self._tracer, _PROPAGATOR.extract({"traceparent": traceparent}))

    def batch(self, name: str, entries: Sequence[EntrySpans], size: int, tokens: int, backend: str) -> BatchTrace:
        """The span of one backend call: a root of its own, linked to each traced input's request."""
        started_ns = time.time_ns()
        span = self._tracer.start_span(
            name, context=otel_context.Context(), kind=SpanKind.CLIENT, start_time=started_ns,
            links=[entry.request_link() for entry in entries],
            attributes={"batch_size": size, "batch_tokens": tokens, "backend": backend},
        )
        return BatchTrace(span, entries, started_ns)

    def shutdown(self) -> None:
        self._provider.force_flush(SHUTDOWN_FLUSH_MS)
        self._provider.shutdown()


def _describe(span: Span) -> dict[str, object]:
    fields: dict[str, object] = {"name": getattr(span, "name", "")}
    attributes = getattr(span, "attributes", None)
    if attributes:
        fields.update(attributes)
    return fields
