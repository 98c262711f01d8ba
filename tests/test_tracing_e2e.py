"""OpenTelemetry tracing (--otlp-endpoint) end to end: a real server exports to a
real OTLP/gRPC receiver started by the test; one /embed and one gRPC Embed carry
the caller's W3C `traceparent`, and their spans arrive in the caller's trace."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import RunningServer, free_port, start_server, wait_for
from tests.otlp_receiver import ReceivedSpan, TraceReceiver, otlp_receiver

SERVICE = "embedserve-tracing-test"
# Spans leave each process within a tenth of a second (BatchSpanProcessor's delay).
ENV = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def receiver() -> Iterator[TraceReceiver]:
    with otlp_receiver() as running:
        yield running


def _caller() -> tuple[str, str, str]:
    """A caller's trace id, span id and the traceparent naming them (sampled flag off:
    TEI's always-on sampler traces it anyway)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-00"


def _embed_http(server: RunningServer, headers: dict[str, str]) -> None:
    response = httpx.post(f"{server.url}/embed", json={"inputs": ["traced over http", "and a second input"]},
                          headers=headers, timeout=60)
    assert response.status_code == 200, response.text


def _embed_grpc(server: RunningServer, traceparent: str) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = tei_pb2_grpc.EmbedStub(channel).Embed(
            tei_pb2.EmbedRequest(inputs="traced over grpc"), metadata=[("traceparent", traceparent)], timeout=60
        )
    assert len(response.embeddings) == 384


def _stages_arrived(trace_id: str, inputs: int):  # type: ignore[no-untyped-def]
    def arrived(spans: list[ReceivedSpan]) -> bool:
        in_trace = [s for s in spans if s.trace_id == trace_id]
        names = [s.name for s in in_trace]
        batches = {link for s in in_trace if s.name == "inference" for link in s.linked_span_ids}
        forwarded = {s.parent_id for s in spans if s.name == "forward"}
        return names.count("queue") >= inputs and names.count("inference") >= inputs and "encode" in names and (
            "embed" in names) and batches <= forwarded

    return arrived


def _check_trace(spans: list[ReceivedSpan], trace_id: str, caller_span_id: str, inputs: int,
                 front: str, queue_process: str) -> None:
    """The request span is the caller's child; encode, queue and inference are the
    request span's; each inference links to its batch's span, a root linked back."""
    in_trace = [s for s in spans if s.trace_id == trace_id]
    [request] = [s for s in in_trace if s.name == "embed"]
    assert request.parent_id == caller_span_id
    assert request.span.kind == Span.SPAN_KIND_SERVER
    fields = request.attributes
    for field in ("total_time", "tokenization_time", "queue_time", "inference_time"):
        assert str(fields[field]).endswith("s"), fields  # TEI's Duration format: 12.3ms, 450µs, ...
    assert int(str(fields["compute_tokens"])) > 0
    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in in_trace:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == ["embed", "encode", "inference", "queue"], sorted(by_name)
    assert len(by_name["encode"]) == 1
    assert len(by_name["queue"]) == len(by_name["inference"]) == inputs
    for span in by_name["encode"] + by_name["queue"] + by_name["inference"]:
        assert span.parent_id == request.span_id, span.name
    for span in in_trace:
        assert span.resource["service.name"] == SERVICE
    assert request.resource["embedserve.process"] == front
    assert by_name["encode"][0].resource["embedserve.process"] == front
    for span in by_name["queue"] + by_name["inference"]:
        assert span.resource["embedserve.process"] == queue_process
    # The batch: a span of its own trace, linked both ways.
    batches = {s.span_id: s for s in spans if s.name == "embed" and not s.parent_id and s.trace_id != trace_id}
    for inference in by_name["inference"]:
        [batch_id] = inference.linked_span_ids
        batch = batches[batch_id]
        assert request.span_id in batch.linked_span_ids
        assert batch.resource["embedserve.process"] == queue_process
        assert int(str(batch.attributes["batch_size"])) >= 1
        # The backend process continues the batch's trace with its `forward` span.
        [forward] = [s for s in spans if s.name == "forward" and s.parent_id == batch.span_id]
        assert forward.trace_id == batch.trace_id
        assert forward.resource["embedserve.process"] == "backend-0"
        assert forward.resource["service.name"] == SERVICE


def _run_and_check(server: RunningServer, receiver: TraceReceiver, front: str, queue_process: str) -> None:
    http_trace, http_parent, http_header = _caller()
    _embed_http(server, {"traceparent": http_header, "tracestate": "vendor=1"})
    grpc_trace, grpc_parent, grpc_header = _caller()
    _embed_grpc(server, grpc_header)
    spans = receiver.wait_for(_stages_arrived(http_trace, 2))
    spans = receiver.wait_for(_stages_arrived(grpc_trace, 1))
    _check_trace(spans, http_trace, http_parent, 2, front, queue_process)
    _check_trace(spans, grpc_trace, grpc_parent, 1, front, queue_process)


def test_embed_spans_join_the_callers_trace(receiver: TraceReceiver, tmp_path: Path) -> None:
    args = ("--otlp-endpoint", receiver.endpoint, "--otlp-service-name", SERVICE)
    with start_server(*args, tmp_dir=tmp_path, env=ENV) as server:
        _run_and_check(server, receiver, "router", "router")
        _check_stream(server, receiver)
        # No traceparent (or a malformed one): the request starts a trace of its own.
        before = {s.trace_id for s in receiver.spans()}
        _embed_http(server, {})
        _embed_http(server, {"traceparent": "00-not-a-trace-01"})

        def new_requests(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans
                    if s.name == "embed" and s.span.kind == Span.SPAN_KIND_SERVER and s.trace_id not in before]

        fresh = new_requests(receiver.wait_for(lambda spans: len(new_requests(spans)) == 2))
        assert all(not span.parent_id for span in fresh)
        assert fresh[0].trace_id != fresh[1].trace_id


def _check_stream(server: RunningServer, receiver: TraceReceiver) -> None:
    """Each message of a gRPC stream is a request span under the call's traceparent."""
    trace_id, parent, header = _caller()
    messages = [tei_pb2.EmbedRequest(inputs=text) for text in ("first streamed", "second streamed")]
    with grpc.insecure_channel(server.grpc_target) as channel:
        answers = list(tei_pb2_grpc.EmbedStub(channel).EmbedStream(
            iter(messages), metadata=[("traceparent", header)], timeout=60
        ))
    assert len(answers) == 2
    spans = receiver.wait_for(lambda spans: len(
        [s for s in spans if s.trace_id == trace_id and s.name == "embed_stream"]) == 2 and len(
        [s for s in spans if s.trace_id == trace_id and s.name == "inference"]) == 2)
    items = [s for s in spans if s.trace_id == trace_id and s.name == "embed_stream"]
    assert all(item.parent_id == parent for item in items)
    item_ids = {item.span_id for item in items}
    assert {s.parent_id for s in spans if s.trace_id == trace_id and s.name in ("encode", "queue", "inference")} == item_ids


def test_the_queue_owner_process_joins_the_trace(receiver: TraceReceiver, tmp_path: Path) -> None:
    """--router-workers 2: the front makes the request and encode spans, the queue
    owner the queue, inference and batch spans, in the same trace."""
    args = ("--otlp-endpoint", receiver.endpoint, "--otlp-service-name", SERVICE, "--router-workers", "2")
    with start_server(*args, tmp_dir=tmp_path, env=ENV) as server:
        spans_before = len(receiver.spans())
        _run_and_check_fronts(server, receiver)
        assert len(receiver.spans()) > spans_before


def _run_and_check_fronts(server: RunningServer, receiver: TraceReceiver) -> None:
    http_trace, http_parent, http_header = _caller()
    _embed_http(server, {"traceparent": http_header})
    spans = receiver.wait_for(_stages_arrived(http_trace, 2))
    [request] = [s for s in spans if s.trace_id == http_trace and s.name == "embed"]
    front = str(request.resource["embedserve.process"])
    assert front in ("router-0", "router-1")
    _check_trace(spans, http_trace, http_parent, 2, front, "router-owner")
    grpc_trace, grpc_parent, grpc_header = _caller()
    _embed_grpc(server, grpc_header)
    spans = receiver.wait_for(_stages_arrived(grpc_trace, 1))
    [request] = [s for s in spans if s.trace_id == grpc_trace and s.name == "embed"]
    _check_trace(spans, grpc_trace, grpc_parent, 1, str(request.resource["embedserve.process"]), "router-owner")


def test_disable_spans_exports_nothing(receiver: TraceReceiver, tmp_path: Path) -> None:
    args = ("--otlp-endpoint", receiver.endpoint, "--disable-spans")
    with start_server(*args, tmp_dir=tmp_path, env=ENV) as server:
        _embed_http(server, {"traceparent": _caller()[2]})
        _embed_grpc(server, _caller()[2])
    # The server has stopped: whatever it had buffered would have been flushed by now.
    assert receiver.spans() == []


def test_a_dead_collector_neither_slows_nor_fails_requests(tmp_path: Path) -> None:
    """Exports fail in the processor's thread; requests never wait for them, and the
    failure is logged once, not once per export or per request."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**ENV, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    with start_server("--otlp-endpoint", dead, tmp_dir=tmp_path, env=env) as server:
        started = time.monotonic()
        for _ in range(10):
            _embed_http(server, {"traceparent": _caller()[2]})
        wait_for(lambda: "[router] embedserve.proto.tracing.otlp: cannot export spans" in server.log(), 30,
                 "the export failure to be logged")
        for _ in range(10):
            _embed_http(server, {})
        elapsed = time.monotonic() - started
        time.sleep(2.5)  # more failed exports, each a second long
        assert elapsed < 30, elapsed
    # Once per process that exports (the router, the backend), however many exports failed.
    failures = [line for line in server.log().splitlines() if "cannot export spans" in line]
    assert sorted(line.split("[")[1].split("]")[0] for line in failures) == ["backend-0", "router"], failures
