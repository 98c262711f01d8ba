"""Run embedserve the way its image runs: a user without capabilities, in a network
namespace of its own, HTTP on a port below 1024. tests/test_port80_e2e.py starts this
as root under `unshare --net`; it prints one JSON line saying what happened.

    python -m tests.netns_server <port> <unprivileged_port_start or "-"> <scratch dir> <launcher args...>
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# The image's user (deploy/docker: USER 10001:10001).
IMAGE_UID = 10001
STARTUP_TIMEOUT_S = 150.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than root may execute `path` (search on every folder above it)."""
    resolved = path.resolve()
    return all(os.stat(folder).st_mode & 0o001 for folder in resolved.parents) and bool(
        os.stat(resolved).st_mode & 0o001)


def _credentials(pid: int) -> tuple[int, int]:
    """A running process's real uid and effective capability set (CapEff)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["CapEff"].strip(), 16)


def main() -> None:
    port, port_start, scratch, *launcher_args = sys.argv[1:]
    # A new network namespace starts with loopback down and the kernel's default (1024).
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if port_start != "-":
        Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").write_text(port_start)
    env = {"PATH": os.environ.get("PATH", ""), "PORT": port, "HOME": scratch, "HF_HOME": f"{scratch}/hf",
           "XDG_CACHE_HOME": f"{scratch}/xdg", "EMBEDSERVE_CACHE_DIR": f"{scratch}/cache", "HF_HUB_OFFLINE": "1"}
    drop = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--no-new-privs"]
    if _reachable_by_others(Path(sys.executable)):
        drop += ["--inh-caps=-all", "--bounding-set=-all"]
    else:
        # This machine's interpreter lies under a root-only folder (pyenv in /root): keep
        # the one capability that lets the user reach it (read and search, nothing else).
        drop += ["--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
                 "--bounding-set=-all,+dac_read_search"]
    log_path = Path(scratch) / "launcher.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*drop, sys.executable, "-m", "embedserve.launcher", *launcher_args], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
    healthy = False
    uid, capabilities = -1, -1
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        if _healthy(f"http://127.0.0.1:{port}/health"):
            healthy = True
            uid, capabilities = _credentials(process.pid)  # the launcher, serving
            break
        time.sleep(0.3)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(json.dumps({"healthy": healthy, "exit_code": process.returncode, "log": log_path.read_text(),
                      "uid": uid, "capabilities": capabilities}))


if __name__ == "__main__":
    main()
