"""CPU seconds the model costs, apart from the rest of the backend process.

Forward passes run on one dedicated thread (backends/server.py), which we name
`MODEL_THREAD_NAME`. Linux copies a thread's name to the threads it creates, and
OpenMP gives each thread that opens a parallel region its own team, so torch's
intra-op workers started by the forward thread carry the name too (onnxruntime's
pool is created while the engine loads: `model_threads_named` names the loading
thread for that span). Everything else in the process (the gRPC/asyncio loop, gRPC's
own threads) keeps other names and is "outside the model".

Why per-thread and not `time.process_time()` around the call: the router keeps two
batches in flight, so while one runs, the loop thread is already receiving and
decoding the next and encoding the previous answer; the process clock would count
that work as model time and flatter the "outside the model" figure. Why cumulative:
OpenMP workers spin for a while after a parallel region ends; that spin is caused by
the model, and a reading taken from the previous batch's end to this one's counts it.

Per-thread CPU comes from /proc/self/task/<tid>/schedstat (nanoseconds on CPU,
the scheduler's exact figure; `stat`'s utime/stime are 10 ms ticks).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

MODEL_THREAD_NAME = "es-model"
# Model threads are long-lived (the forward thread, OpenMP's team): after the first
# readings, look for new ones on every this-many only. One found late still counts
# whole, as it was never read before.
RESCAN_EVERY = 32
TASKS_DIR = "/proc/self/task"
PR_SET_NAME = 15
PR_GET_NAME = 16
THREAD_NAME_BYTES = 16  # the kernel's TASK_COMM_LEN, NUL included

_libc = ctypes.CDLL(None, use_errno=True)


def set_thread_name(name: str) -> None:
    """Name the calling OS thread (what /proc/<pid>/task/<tid>/comm shows)."""
    _libc.prctl(PR_SET_NAME, name.encode()[: THREAD_NAME_BYTES - 1], 0, 0, 0)


def thread_name() -> str:
    buffer = ctypes.create_string_buffer(THREAD_NAME_BYTES)
    _libc.prctl(PR_GET_NAME, buffer, 0, 0, 0)
    return buffer.value.decode(errors="replace")


@contextmanager
def model_threads_named() -> Iterator[None]:
    """Threads the calling thread starts inside the block count as model threads."""
    previous = thread_name()
    set_thread_name(MODEL_THREAD_NAME)
    try:
        yield
    finally:
        set_thread_name(previous)


class ModelCpuClock:
    """Nanoseconds on CPU of every thread named MODEL_THREAD_NAME, read cumulatively:
    each `take()` returns the seconds spent since the previous one.

    Called from one thread only (the forward thread); costs a directory listing and
    one pread per model thread.
    """

    def __init__(self, tasks_dir: str = TASKS_DIR, rescan_every: int = RESCAN_EVERY) -> None:
        self._tasks_dir = tasks_dir
        self._rescan_every = rescan_every
        self._model_fds: dict[str, int] = {}  # tid -> open schedstat
        self._last_ns: dict[str, int] = {}  # tid -> its on-CPU ns at the previous take()
        self._other_tids: set[str] = set()
        self._takes = 0
        self.available = os.path.exists(os.path.join(tasks_dir, str(os.getpid()), "schedstat"))
        if not self.available:
            logger.warning("no per-thread schedstat here: model CPU seconds are not measured")
        self.take()

    def take(self) -> float:
        if not self.available:
            return 0.0
        if self._takes < self._rescan_every or self._takes % self._rescan_every == 0:
            self._find_new_threads()
        self._takes += 1
        spent = 0
        for tid, fd in list(self._model_fds.items()):
            try:
                now = int(os.pread(fd, 64, 0).split(maxsplit=1)[0])
            except (OSError, ValueError, IndexError):
                self._forget(tid)  # the thread ended; its last slice since the previous take is lost
                continue
            # A thread seen for the first time existed only since the previous take (or
            # this clock's start): all of its time counts.
            spent += now - self._last_ns.get(tid, 0)
            self._last_ns[tid] = now
        return spent / 1e9

    def close(self) -> None:
        for tid in list(self._model_fds):
            self._forget(tid)

    def _find_new_threads(self) -> None:
        try:
            tids = os.listdir(self._tasks_dir)
        except OSError:
            return
        for tid in tids:
            if tid in self._model_fds or tid in self._other_tids:
                continue
            try:
                with open(os.path.join(self._tasks_dir, tid, "comm"), encoding="utf-8", errors="replace") as handle:
                    name = handle.read().strip()
                if name != MODEL_THREAD_NAME:
                    self._other_tids.add(tid)
                    continue
                self._model_fds[tid] = os.open(os.path.join(self._tasks_dir, tid, "schedstat"), os.O_RDONLY)
            except OSError:
                continue  # ended between the listing and the read

    def _forget(self, tid: str) -> None:
        fd = self._model_fds.pop(tid, None)
        self._last_ns.pop(tid, None)
        if fd is not None:
            os.close(fd)
