"""Start, health-check and stop an embedserve subprocess on a free local port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.checkout import LINKS_DIR, import_root_for

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 300.0
HEALTH_POLL_S = 0.5
STOP_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 8000
# Links that make a server started in another checkout import that checkout (bench/checkout.py).


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    # Port 0 lets the kernel choose; the tiny race until the server binds is acceptable here.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_command(model_dir: Path, port: int, extra_args: list[str]) -> list[str]:
    # Run in a tree's root (ServerProcess.cwd), it serves that tree's code: start()
    # points the import of `embedserve` there (bench/checkout.py).
    base = [sys.executable, "-m", "embedserve.launcher"]
    # --hostname is explicit because the launcher also reads $HOSTNAME, which shells set
    # to the machine name (a name binds what it resolves to). The short per-pid
    # socket prefix keeps Unix socket paths under the kernel's length limit.
    return [
        *base,
        "--model-id", str(model_dir),
        "--hostname", HOST,
        "--port", str(port),
        "--uds-path", f"/tmp/esb-{os.getpid()}",
        "--grpc-port", "0",  # the bench drives HTTP only; never collide on the default port
        "--prometheus-port", "0",  # nor on the default metrics port (9000)
        *extra_args,
    ]


@dataclass
class ServerProcess:
    command: list[str]
    port: int
    cwd: Path = REPO_ROOT  # the source tree whose launcher and children run
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        import_root = import_root_for(self.cwd, LINKS_DIR)
        if import_root is not None:  # another checkout than the installed one: its own code
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(import_root), env.get("PYTHONPATH")]))
        # A file, not a pipe: nobody reads the server's output during the run, and a
        # full pipe buffer would block its logging.
        handle = tempfile.NamedTemporaryFile(prefix="embedserve-bench-", suffix=".log", delete=False)
        self._log_file = handle
        self.log_path = Path(handle.name)
        # Own session, so a Ctrl-C here does not also reach the launcher (it treats a
        # second signal as "kill everything now") and killpg can reach its children.
        self.popen = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                      cwd=self.cwd, start_new_session=True)

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]

    def wait_healthy(self, timeout_s: float = HEALTH_TIMEOUT_S, poll_s: float = HEALTH_POLL_S) -> float:
        """Seconds until GET /health answered 200; raises with the log if it never does."""
        assert self.popen is not None
        started = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() - started < timeout_s:
                code = self.popen.poll()
                if code is not None:
                    raise ServerError(f"server exited with code {code} during start-up:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(poll_s)
        raise ServerError(f"server not healthy after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL the whole process group if it does not drain in time."""
        if self.popen is None:
            return None
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait()
            return self.popen.returncode
        finally:
            if self._log_file is not None:
                self._log_file.close()  # type: ignore[attr-defined]

    def remove_log(self) -> None:
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def stop_and_report(self) -> None:
        """Stop; print the log's tail if the server did not exit cleanly, else drop the log."""
        code = self.stop()
        if code not in (0, None):
            print(f"server exited with code {code}; log tail:\n{self.log_tail()}", flush=True)
        else:
            self.remove_log()
