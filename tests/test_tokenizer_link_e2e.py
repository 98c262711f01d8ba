"""A tokenizer worker killed under load, through the whole server: every request
gets 200 or 503 (none hangs), the launcher restarts the worker and the router
reconnects its encode link to it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import start_server, wait_for
from tests.test_reliability_e2e import LoadLog, _fire

TEXT = " ".join(["a tokenizer worker killed mid-load must not leave a request waiting"] * 12)
# Enough that most are still to come when the worker is killed (after the 5th answer).
REQUESTS = 40


def test_tokenizer_worker_killed_under_load_answers_200_or_503_then_recovers(tmp_path: Path) -> None:
    with start_server("--tokenization-workers", "1", "--max-concurrent-requests", "4096", tmp_dir=tmp_path) as server:
        [worker_pid] = server.child_pids("tokenizer_pool")
        log = LoadLog()
        load = threading.Thread(target=_fire, args=(server.url, [{"inputs": [TEXT] * 8}] * REQUESTS, log))
        load.start()
        wait_for(lambda: server.metric("te_request_count") >= 5 or not load.is_alive(), 120, "the load to run")
        os.kill(worker_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        load.join(timeout=300)
        assert not load.is_alive(), "a request hung"

        statuses = [o.status for o in log.outcomes]
        assert len(statuses) == REQUESTS and set(statuses) <= {200, 503}, statuses
        assert max(o.ended for o in log.outcomes) > killed_at, "the load must still run at the kill"
        print(f"after the kill: {statuses.count(200)} x 200, {statuses.count(503)} x 503")
        wait_for(lambda: server.child_pids("tokenizer_pool") not in ([], [worker_pid]), 60, "the worker to restart")

        def embeds() -> bool:
            return httpx.post(f"{server.url}/embed", json={"inputs": ["after the restart"]}, timeout=30).status_code == 200

        wait_for(embeds, 120, "an embed after the restart", tick_s=0.2)
        assert "tokenizer-0 killed by SIGKILL; restarting it" in server.log()
