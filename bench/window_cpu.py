"""CPU over exactly a phase's measured window: the server's processes (all roles) and
the whole machine, sampled by a timer thread at the window's start and end.

On a shared 2-core machine a neighbour's tests take a varying share of the cores, so
texts/s alone swings between runs of the same server; texts per server CPU-second,
and how busy everything else was, say how much of a difference is the neighbour.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from bench.cpu_per_request import machine_busy_s
from bench.process_cpu import CpuMeter


@dataclass(frozen=True)
class WindowCores:
    server: float  # cores the server's processes used on average over the window
    machine: float  # cores the whole machine was busy, this server and its load included


class WindowCpu:
    def __init__(self, launcher_pid: int) -> None:
        self._meter = CpuMeter(launcher_pid)
        self._samples: list[tuple[float, float, float]] = []  # (time, server CPU s, machine busy s)
        self._thread: threading.Thread | None = None

    def follow(self, start: float, end: float) -> None:
        """Sample at `start` and `end` (time.time()); returns at once."""
        self._meter.start()  # the server's processes as they are now; a restart mid-run is a failure anyway
        self._thread = threading.Thread(target=self._sample_at, args=((start, end),), daemon=True)
        self._thread.start()

    def _sample_at(self, moments: tuple[float, float]) -> None:
        for moment in moments:
            time.sleep(max(moment - time.time(), 0.0))
            try:
                server_s = sum(self._meter.seconds_spent().values())
            except OSError:  # a server process gone: no figure rather than a wrong one
                server_s = math.nan
            self._samples.append((time.time(), server_s, machine_busy_s()))

    def cores(self) -> WindowCores:
        """After the window ended: the averages over it (NaN if it was not sampled)."""
        if self._thread is not None:
            self._thread.join()
        if len(self._samples) != 2:
            return WindowCores(math.nan, math.nan)
        (t0, server0, machine0), (t1, server1, machine1) = self._samples
        wall = max(t1 - t0, 1e-6)
        return WindowCores(server=(server1 - server0) / wall, machine=(machine1 - machine0) / wall)
