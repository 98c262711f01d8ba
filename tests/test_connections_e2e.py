"""HTTP connections and request accounting, with real processes and raw sockets:
clients that leave mid-upload or reset HTTP/2 streams, slow bodies, closed
keep-alive connections, and te_request_failure counted per request.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import h2.config
import h2.connection
import httpx
import orjson
import pytest

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import BULK, RunningServer, start_server, wait_for

BODY_READ_TIMEOUT_S = 3.0
DECLARED_LENGTH = 100_000
LONG_TEXT = " ".join(["retrieval augmented generation pipelines embed passages"] * 40)  # > 256 tokens
TCP_CLOSE_WAIT = "08"  # st column of /proc/net/tcp
TCP_ESTABLISHED = "01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ("--body-read-timeout", str(BODY_READ_TIMEOUT_S))
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("connections")) as running:
        yield running


def _port(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _server_sockets(port: int, state: str) -> int:
    """Sockets on the server's side of `port` in TCP `state`, from the kernel's table."""
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                count += 1
    return count


def _quiet_since(server: RunningServer, offset: int) -> str:
    """The log written after `offset`, checked for tracebacks and errors."""
    written = server.log()[offset:]
    assert "Traceback" not in written, written
    assert " ERROR " not in written, written
    return written


def _read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """What the server sends until it closes the connection."""
    sock.settimeout(timeout_s)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


# ------------------------------------------------------------------ disconnects


def test_client_leaving_mid_upload_is_quiet_and_counted(server: RunningServer) -> None:
    offset = len(server.log())
    dropped = server.metric('te_request_failure{err="dropped"}')
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", _port(server))) as sock:
            sock.sendall(_head("/embed", DECLARED_LENGTH) + b'{"inputs": "' + b"a" * 1000)
    wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= dropped + 5, 30, "the drops")
    assert server.metric('te_request_failure{err="dropped"}') == dropped + 5
    _quiet_since(server, offset)


def test_http2_rapid_reset_is_quiet_and_counted(server: RunningServer) -> None:
    streams = 100
    offset = len(server.log())
    dropped = server.metric('te_request_failure{err="dropped"}')
    body = orjson.dumps({"inputs": "a stream reset before its body is complete"})
    with socket.create_connection(("127.0.0.1", _port(server))) as sock:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        for _ in range(streams):
            stream_id = connection.get_next_available_stream_id()
            headers = [(":method", "POST"), (":path", "/embed"), (":scheme", "http"), (":authority", "127.0.0.1"),
                       ("content-type", "application/json"), ("content-length", str(len(body)))]
            connection.send_headers(stream_id, headers)
            connection.send_data(stream_id, body[:10])
            connection.reset_stream(stream_id)
        sock.sendall(connection.data_to_send())
        wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= dropped + streams, 30, "the resets")
    assert server.metric('te_request_failure{err="dropped"}') == dropped + streams
    _quiet_since(server, offset)
    assert httpx.post(f"{server.url}/embed", json={"inputs": "after"}, timeout=30).status_code == 200


def test_aborted_requests_count_once_each_not_per_input(server: RunningServer) -> None:
    # The clients leave while their inputs are being tokenized or queued: each
    # request is one failure, whatever its 32 inputs had reached.
    offset = len(server.log())
    failures = server.metric("te_request_failure")
    dropped = server.metric('te_request_failure{err="dropped"}')
    successes = server.metric("te_request_success")
    body = orjson.dumps({"inputs": [LONG_TEXT] * 32})
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", _port(server))) as sock:
            sock.sendall(_head("/embed", len(body)) + body)
    wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= dropped + 10, 60, "the drops")
    wait_for(lambda: server.metric("te_queue_size") == 0, 60, "the queue to empty")
    assert server.metric('te_request_failure{err="dropped"}') == dropped + 10
    assert server.metric("te_request_failure") == failures + 10
    assert server.metric("te_request_success") == successes
    _quiet_since(server, offset)


def test_cancelled_grpc_calls_count_once_each(server: RunningServer) -> None:
    dropped = server.metric('te_request_failure{err="dropped"}')
    enqueued = server.metric("te_request_input_length_count")
    # At least two batches of backlog (each request is half of --max-batch-tokens, and two
    # that arrive together share a batch): one running, one formed and waiting at the
    # backend; the calls then wait in the queue.
    backlog: list[int] = []
    blockers = [threading.Thread(target=lambda: backlog.append(
        httpx.post(f"{server.url}/embed", json={"inputs": [LONG_TEXT] * 32}, timeout=300).status_code))
        for _ in range(3)]
    for blocker in blockers:
        blocker.start()
    wait_for(lambda: server.metric("te_request_input_length_count") >= enqueued + 96, 60, "the backlog")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = tei_pb2_grpc.EmbedStub(channel)
        calls = [stub.Embed.future(tei_pb2.EmbedRequest(inputs=f"cancelled {i}"), metadata=tuple(BULK.items()))
                 for i in range(5)]
        wait_for(lambda: server.metric("te_request_input_length_count") >= enqueued + 101, 60, "the calls queued")
        assert server.metric("te_queue_size") >= 5, "the calls must still wait behind the backlog"
        for call in calls:
            call.cancel()
        wait_for(lambda: server.metric('te_request_failure{err="dropped"}') >= dropped + 5, 30, "the drops")
    for blocker in blockers:
        blocker.join(timeout=300)
    assert backlog == [200, 200, 200]
    assert server.metric('te_request_failure{err="dropped"}') == dropped + 5


# ------------------------------------------------------------------ body read timeout


def test_trickling_body_gets_408_after_the_body_read_timeout(server: RunningServer) -> None:
    timeouts = server.metric('te_request_failure{err="body_timeout"}')
    with socket.create_connection(("127.0.0.1", _port(server))) as sock:
        sock.sendall(_head("/embed", DECLARED_LENGTH) + b'{"inputs": "')
        started = time.monotonic()
        sock.settimeout(0.2)
        received = b""
        while not received.endswith(b"}") and time.monotonic() - started < 60:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.sendall(b"a")  # one byte every 0.2 s: alive, never done
                continue
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
        rest = _read_until_closed(sock, 10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert b"connection: close" in head.lower()
    assert orjson.loads(body) == {
        "error": f"the request body did not arrive within {BODY_READ_TIMEOUT_S:g}s",
        "error_type": "Timeout",
    }
    assert rest == b"", "the server must close a connection whose body it did not read"
    # Not before the timeout, and well before the 30 s default (the flag took effect).
    assert BODY_READ_TIMEOUT_S - 0.1 <= elapsed < BODY_READ_TIMEOUT_S + 10
    assert server.metric('te_request_failure{err="body_timeout"}') == timeouts + 1


def test_sigterm_does_not_wait_for_bodies_still_arriving(tmp_path: Path) -> None:
    graceful_timeout_s = 60
    args = ("--body-read-timeout", "120", "--graceful-timeout", str(graceful_timeout_s))
    with start_server(*args, tmp_dir=tmp_path) as server:
        socks = [socket.create_connection(("127.0.0.1", _port(server))) for _ in range(50)]
        for sock in socks:
            sock.sendall(_head("/embed", DECLARED_LENGTH) + b'{"inputs": "')
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.2):
                for sock in socks:
                    try:
                        sock.send(b"a")
                    except OSError:
                        pass  # answered and closed by the server

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            # Every upload is under way: a request on a fresh connection still answers.
            assert httpx.post(f"{server.url}/embed", json={"inputs": "x"}, timeout=30).status_code == 200
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=graceful_timeout_s + 30)
            stopped_after_s = time.monotonic() - signalled
        finally:
            stop.set()
            trickler.join()
        answers = [_read_until_closed(sock, 5) for sock in socks]
        for sock in socks:
            sock.close()
    # The uploads were not in flight, so the drain had nothing to wait for.
    assert "draining 0 in-flight request(s)" in server.log()
    assert stopped_after_s < graceful_timeout_s / 3, f"SIGTERM took {stopped_after_s:.1f}s"
    for answer in answers:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer


# ------------------------------------------------------------------ keep-alive


def test_closed_keep_alive_connections_leave_no_close_wait(server: RunningServer) -> None:
    port = _port(server)
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    for sock in socks:
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert _server_sockets(port, TCP_ESTABLISHED) >= 50
    for sock in socks:
        sock.close()
    wait_for(lambda: _server_sockets(port, TCP_CLOSE_WAIT) == 0, 1.0, "the server to close its sockets")

    # Keep-alive itself still holds: an idle connection the client keeps is reused.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(1.5)
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
