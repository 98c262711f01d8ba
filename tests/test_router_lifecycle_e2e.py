"""Several router fronts under load, with real processes (--router-workers 2, issue 12):
a front killed mid-load, and SIGTERM while requests run on both fronts.

Each request goes out on a connection of its own, so the kernel hands them to
whichever front accepts first on the shared listening socket.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import RunningServer, start_server, wait_for

MEDIUM_TEXT = " ".join(["several fronts share one port and one token budget"] * 6)


@dataclass
class Outcome:
    ended: float
    status: int | None  # None: the connection was reset or refused


@dataclass
class Load:
    """`count` requests of `inputs` texts, each on a fresh connection, all at once."""

    url: str
    count: int
    inputs: int
    outcomes: list[Outcome] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> Load:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()))
        self.thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the load hung"

    async def _run(self) -> None:
        async def one() -> None:
            async with httpx.AsyncClient(timeout=180) as client:
                try:
                    status: int | None = (await client.post(
                        f"{self.url}/embed", json={"inputs": [MEDIUM_TEXT] * self.inputs})).status_code
                except httpx.TransportError:
                    status = None
                self.outcomes.append(Outcome(time.monotonic(), status))

        await asyncio.gather(*(one() for _ in range(self.count)))


def _front_pids(server: RunningServer) -> dict[str, int]:
    """router-0, router-1, ... and router-owner by pid, read from their command lines."""
    found: dict[str, int] = {}
    for pid in server.child_pids("router"):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        name = "router-owner" if "embedserve.router.owner" in args else args[-2] if args[-1] == "" else args[-1]
        found[name] = pid
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_front_fails_only_its_own_requests_and_comes_back(tmp_path: Path) -> None:
    with start_server("--router-workers", "2", "--max-batch-requests", "4", tmp_dir=tmp_path) as server:
        pids = _front_pids(server)
        assert set(pids) == {"router-owner", "router-0", "router-1"}, pids
        load = Load(server.url, count=24, inputs=16).start()
        wait_for(lambda: server.metric("te_request_input_length_count") >= 24 * 16, 120, "every request accepted")

        os.kill(pids["router-0"], signal.SIGKILL)
        killed_at = time.monotonic()
        load.join(240)

        statuses = [o.status for o in load.outcomes]
        print(f"after the kill: {statuses.count(200)} answered, {statuses.count(None)} cut off")
        # The killed front's clients lose their connection at once; every other
        # request, on the other front, is answered in full.
        assert set(statuses) <= {200, None}, statuses
        assert 200 in statuses
        assert all(o.ended - killed_at < 5.0 for o in load.outcomes if o.status is None)
        assert max(o.ended for o in load.outcomes if o.status == 200) > killed_at, "the other front kept serving"

        wait_for(lambda: "router-0 restarted" in server.log(), 30, "the front restarted")
        assert "router-0 killed by SIGKILL; restarting it" in server.log()
        wait_for(lambda: set(_front_pids(server)) == {"router-owner", "router-0", "router-1"}
                 and _front_pids(server)["router-0"] != pids["router-0"], 30, "a new router-0")
        assert server.process.poll() is None
        assert _front_pids(server)["router-owner"] == pids["router-owner"]
        # Both fronts serve again: fresh connections all answered.
        after = Load(server.url, count=8, inputs=1).start()
        after.join(120)
        assert [o.status for o in after.outcomes] == [200] * 8
        # The inputs of the killed front that were still queued never ran, and no
        # accepted request was lost: everything counted as answered or failed.
        answered = sum(1 for s in statuses if s == 200) + 8
        wait_for(lambda: server.metric("te_request_success") >= answered, 10, "the successes counted")


def test_sigterm_under_load_drains_every_front_then_the_owner(tmp_path: Path) -> None:
    args = ("--router-workers", "2", "--max-batch-requests", "4", "--graceful-timeout", "60")
    with start_server(*args, tmp_dir=tmp_path) as server:
        pids = _front_pids(server)
        load = Load(server.url, count=12, inputs=16).start()
        wait_for(lambda: server.metric("te_request_input_length_count") >= 12 * 16, 120, "every request accepted")

        server.process.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        late = Load(server.url, count=4, inputs=1)
        wait_for(lambda: "draining" in server.log(), 10, "the fronts draining")
        late.start()
        late.join(60)
        load.join(180)

        assert [o.status for o in load.outcomes] == [200] * 12
        assert max(o.ended for o in load.outcomes) > signalled_at, "the load must still run at SIGTERM"
        assert {o.status for o in late.outcomes} <= {503, None}
        assert server.process.wait(timeout=120) == 0
        assert not any(_alive(pid) for pid in pids.values())

        # Order in the log: both fronts stopped before the owner, the owner before the workers.
        log = server.log()
        fronts_stopped = [m.start() for m in re.finditer(r"router stopped", log)]
        owner_stopped = log.find("queue owner stopped")
        assert len(fronts_stopped) == 2 and owner_stopped > max(fronts_stopped), log[-3000:]
