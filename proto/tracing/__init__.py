"""Tracing as every process sees it: cheap no-ops unless --otlp-endpoint is set.

Every process that makes spans (a front, the queue owner, a backend) calls `configure`
once at start and `shutdown` at exit. Without --otlp-endpoint (or with
--disable-spans) nothing of OpenTelemetry is imported and each call below is
one check of a module global; with it, `proto/tracing/otlp.py` does the work.

The trace context crosses a process boundary as a W3C `traceparent` string
(front → queue owner: `Submit.traceparent`, router/owner_link.py; queue →
backend: `Batch.traceparent`, proto/backend.proto), so no code holds an
OpenTelemetry object another process made.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedserve.proto.tracing.otlp import RequestTimings, Tracing

_active: Tracing | None = None
# One shared no-op: entering a nullcontext keeps no state, so it is reusable.
_NOTHING: AbstractContextManager[None] = nullcontext()

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def configure(otlp_endpoint: str | None, service_name: str, disable_spans: bool, process: str,
              json_logs: bool) -> None:
    """Start exporting this process's spans to `otlp_endpoint` (OTLP/gRPC), unless
    there is none or spans are disabled; JSON log lines then carry the current
    span (`span`, `spans`) as TEI's do."""
    global _active
    if not otlp_endpoint or disable_spans:
        return
    from embedserve.proto.tracing.otlp import Tracing

    _active = Tracing.start(otlp_endpoint, service_name, process)
    if json_logs:
        from embedserve.proto import logs

        logs.span_fields = _active.log_fields


def active() -> Tracing | None:
    return _active


def stage(name: str) -> AbstractContextManager[object]:
    """A child span of the current one around a stage of the request (e.g. `encode`)."""
    return _NOTHING if _active is None else _active.stage(name)


def joined(name: str, traceparent: str, attributes: dict[str, int | bool]) -> AbstractContextManager[object]:
    """A span in the trace of `traceparent`, sent by another process; nothing if it sent none."""
    return _NOTHING if _active is None or not traceparent else _active.joined(name, traceparent, attributes)


def current_traceparent() -> str:
    """The current span as a `traceparent` for work handed to another process; "" when off."""
    return "" if _active is None else _active.current_traceparent()


def record_request(metadata: RequestTimings) -> None:
    """TEI's fields on the request span (`total_time`, `tokenization_time`, ...)."""
    if _active is not None:
        _active.record_request(metadata)


def current_failed(message: str) -> None:
    """Mark the current span failed with `message` (an error answered to the caller)."""
    if _active is not None:
        _active.current_failed(message)


def shutdown() -> None:
    """Export what is buffered (bounded), then stop the exporter."""
    global _active
    if _active is not None:
        _active.shutdown()
        _active = None
