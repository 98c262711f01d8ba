"""The model CPU clock counts the named forward thread and the threads it starts,
nothing else in the process (backends/model_cpu.py)."""

from __future__ import annotations

import os
import threading
import time

import torch

from embedserve.backends.model_cpu import MODEL_THREAD_NAME, ModelCpuClock, model_threads_named, set_thread_name, thread_name

BURN_S = 0.2


def _burn_then_wait(name: str | None, done: threading.Event, release: threading.Event) -> None:
    if name is not None:
        set_thread_name(name)
    started = time.thread_time()
    while time.thread_time() - started < BURN_S:
        pass
    done.set()
    release.wait()  # stay alive until the clock has read this thread


def _spent_while(clock: ModelCpuClock, name: str | None) -> float:
    done, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_burn_then_wait, args=(name, done, release))
    clock.take()
    worker.start()
    done.wait()
    spent = clock.take()
    release.set()
    worker.join()
    return spent


def test_counts_the_model_thread_and_not_the_others() -> None:
    clock = ModelCpuClock(rescan_every=1)
    assert clock.available
    assert _spent_while(clock, MODEL_THREAD_NAME) >= BURN_S * 0.99
    assert _spent_while(clock, None) < BURN_S / 2  # the unnamed burner is outside the model
    clock.close()


def test_torch_intra_op_workers_inherit_the_name() -> None:
    done, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_torch_work, args=(done, release))
    worker.start()
    done.wait()
    try:
        # Besides the forward thread itself, the OpenMP workers it started carry its name.
        assert len(_model_thread_ids() - {str(threading.get_native_id())}) >= 2
    finally:
        release.set()
        worker.join()


def test_model_threads_named_restores_the_name() -> None:
    before = thread_name()
    with model_threads_named():
        assert thread_name() == MODEL_THREAD_NAME
    assert thread_name() == before


def _torch_work(done: threading.Event, release: threading.Event) -> None:
    set_thread_name(MODEL_THREAD_NAME)
    torch.set_num_threads(2)  # per calling thread under OpenMP
    values = torch.randn(4_000_000)
    for _ in range(3):
        values.exp()  # at::parallel_for: an OpenMP team of this thread
    done.set()
    release.wait()


def _model_thread_ids() -> set[str]:
    found = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as handle:
                if handle.read().strip() == MODEL_THREAD_NAME:
                    found.add(tid)
        except OSError:
            continue
    return found
