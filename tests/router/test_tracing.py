"""proto/tracing alone: nothing of OpenTelemetry without --otlp-endpoint, TEI's
field formats, and the current span in JSON log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from embedserve.proto import logs
from embedserve.proto import tracing
from embedserve.proto.tracing.otlp import Tracing, rust_duration

ROOT = Path(__file__).resolve().parents[2]

# Everything a router front, the queue owner and a backend import to serve, then the
# tracing set-up as their entry points call it without an endpoint and with
# --disable-spans; the process then lists any OpenTelemetry module it loaded.
_NO_ENDPOINT = """
import sys
import embedserve.router.__main__, embedserve.router.owner.__main__, embedserve.router.app
import embedserve.router.server, embedserve.router.owner.service, embedserve.router.grpc_api.servicers
import embedserve.router.dispatcher, embedserve.router.batch_queue, embedserve.router.infer
import embedserve.backends.__main__, embedserve.backends.server
from embedserve.proto import tracing
tracing.configure(None, "svc", False, "router", True)
tracing.configure("http://127.0.0.1:4317", "svc", True, "router", True)
assert tracing.active() is None
assert tracing.current_traceparent() == ""
with tracing.stage("encode"):
    pass
tracing.shutdown()
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_without_an_endpoint_opentelemetry_is_never_imported() -> None:
    result = subprocess.run([sys.executable, "-c", _NO_ENDPOINT], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_durations_read_as_teis_rust_debug_format() -> None:
    assert rust_duration(1.5) == "1.5s"
    assert rust_duration(0.0123456) == "12.3456ms"
    assert rust_duration(0.00035) == "350µs"
    assert rust_duration(0.002) == "2ms"
    assert rust_duration(120e-9) == "120ns"
    assert rust_duration(0) == "0ns"


def _json_line(formatter: logging.Formatter) -> dict[str, object]:
    record = logging.LogRecord("router.infer", logging.INFO, __file__, 1, "inside", None, None)
    parsed: dict[str, object] = json.loads(formatter.format(record))
    return parsed


def test_json_log_lines_carry_the_current_span(monkeypatch: pytest.MonkeyPatch) -> None:
    # A provider with no exporter: the spans are real, nothing leaves the test.
    tracer = Tracing(TracerProvider(), "http://127.0.0.1:4317")
    monkeypatch.setattr(logs, "span_fields", tracer.log_fields)
    formatter = logs.TeiJsonFormatter("router")
    assert "span" not in _json_line(formatter)  # no span open: no span fields
    with tracer.request("embed", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01", None) as request:
        request.set_attribute("compute_chars", 12)
        with tracer.stage("encode"):
            line = _json_line(formatter)
            assert line["span"] == {"name": "encode"}
            assert line["spans"] == [{"name": "embed", "compute_chars": 12}, {"name": "encode"}]
            assert len(tracer.current_traceparent()) == 55
            assert tracer.current_traceparent().startswith("00-" + "ab" * 16 + "-")
        assert _json_line(formatter)["span"] == {"name": "embed", "compute_chars": 12}
    assert "spans" not in _json_line(formatter)


def test_disabled_spans_leave_log_lines_alone() -> None:
    tracing.configure("http://127.0.0.1:4317", "svc", True, "router", True)
    assert tracing.active() is None
    assert logs.span_fields is None
