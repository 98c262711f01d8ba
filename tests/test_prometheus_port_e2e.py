"""--prometheus-port: /metrics on a listener of its own, as TEI's exporter, with
the whole server's totals; a taken port stops the start in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, short_socket_prefix, start_server, wait_for


def _series(text: str, name: str) -> float:
    """A series' value, summed over its label sets."""
    total = 0.0
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if not line.startswith("#") and (key == name or key.startswith(name + "{")):
            total += float(value)
    return total


def test_metrics_are_served_on_the_prometheus_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    with start_server("--prometheus-port", str(metrics_port), tmp_dir=tmp_path) as server:
        assert httpx.post(f"{server.url}/embed", json={"inputs": "counted once"}).status_code == 200
        response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        assert "# TYPE te_request_count counter" in response.text
        assert _series(response.text, "te_embed_count") == 1
        assert _series(response.text, "te_request_count") == 1
        # The main port keeps its /metrics, with the same counts.
        assert server.metric("te_embed_count") == 1
        # Only /metrics there: no inference route, no health route.
        assert httpx.post(f"http://127.0.0.1:{metrics_port}/embed", json={"inputs": "x"}).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/health").status_code == 404


def test_several_fronts_report_the_whole_servers_totals(tmp_path: Path) -> None:
    metrics_port = free_port()
    with start_server("--prometheus-port", str(metrics_port), "--tokenization-workers", "1", tmp_dir=tmp_path,
                      env={"ROUTER_WORKERS": "2"}) as server:
        # A new connection per request: the kernel spreads them over the fronts.
        for index in range(6):
            assert httpx.post(f"{server.url}/embed", json={"inputs": f"text {index}"}).status_code == 200
        # Whichever front takes the scrape answers for the whole server.
        for _ in range(4):
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert _series(text, "te_embed_count") == 6 and _series(text, "te_request_count") == 6
        # A front that dies and comes back serves the same listener (the launcher keeps it).
        router_pids = server.child_pids("router")
        [front_1] = [pid for pid in router_pids if Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"router-1\0")]
        os.kill(front_1, signal.SIGKILL)
        wait_for(lambda: "router-1 restarted" in server.log(), 60, "the front restarted")
        wait_for(lambda: len(server.child_pids("router")) == len(router_pids), 60, "the front back")
        [new_front_1] = [pid for pid in server.child_pids("router")
                         if Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"router-1\0")]
        assert _listening_inode(metrics_port) in _socket_inodes(new_front_1)
        for _ in range(4):
            response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert response.status_code == 200 and "# TYPE te_embed_count counter" in response.text


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:`port` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
            return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # a file the process (still starting) closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    return inodes


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", str(free_port()), "--grpc-port", "0",
         "--uds-path", short_socket_prefix(), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


@pytest.mark.parametrize("router_workers", ["1", "2"])
def test_a_taken_prometheus_port_stops_the_start_in_one_line(router_workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _launch("--prometheus-port", str(port), "--router-workers", router_workers)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"cannot bind Prometheus port 127.0.0.1:{port}" in errors[0], result.stderr
    assert "started" not in result.stderr  # refused before any child


def test_the_prometheus_port_cannot_be_the_http_port() -> None:
    port = str(free_port())
    result = _launch("--port", port, "--prometheus-port", port)
    assert result.returncode == 2
    assert f"--prometheus-port {port} is also the HTTP or gRPC port" in result.stderr
