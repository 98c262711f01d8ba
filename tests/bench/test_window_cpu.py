"""The window CPU sampler, on a process with no server children."""

from __future__ import annotations

import os
import time

from bench.window_cpu import WindowCpu


def test_window_cpu_samples_the_window() -> None:
    cpu = WindowCpu(os.getpid())  # no server children here: the server's share is zero
    now = time.time()
    cpu.follow(now, now + 0.05)
    cores = cpu.cores()
    assert cores.server == 0.0 and cores.machine >= 0.0
