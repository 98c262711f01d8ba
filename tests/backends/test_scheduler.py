"""The forward thread's order (backends/scheduler.py): interactive batches first, FIFO in
each lane, and bulk work keeps its share under an endless stream of interactive work.

Jobs here are stand-ins whose steps take what the test says: on a fake clock for the
share (so nothing depends on this machine's speed), or held on events for the order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from embedserve.backends.scheduler import INTERACTIVE_SHARE, ForwardScheduler, LaneQueue, LaneShare, SliceSizer

GUARD_S = 60  # against a hang, not a timing


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedJob:
    """`steps` steps of `step_s` seconds each on a fake clock; logs each step it runs."""

    def __init__(self, name: str, steps: int, step_s: float, clock: FakeClock, log: list[str]) -> None:
        self.name, self.left, self.step_s, self.clock, self.log = name, steps, step_s, clock, log

    def step(self, max_cost: int | None) -> tuple[int, bool]:
        self.clock.now += self.step_s
        self.log.append(self.name)
        self.left -= 1
        return 100, self.left == 0

    def result(self) -> str:
        return self.name


class HeldJob:
    """One step that waits until the test releases it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.started, self.release = threading.Event(), threading.Event()

    def step(self, max_cost: int | None) -> tuple[int, bool]:
        self.started.set()
        assert self.release.wait(GUARD_S)
        self.log.append(self.name)
        return 1, True

    def result(self) -> str:
        return self.name


class FailingJob:
    def step(self, max_cost: int | None) -> tuple[int, bool]:
        raise RuntimeError("the model broke")

    def result(self) -> str:
        raise AssertionError("never finished")


def _run_policy(queue: LaneQueue[TimedJob], clock: FakeClock, until: Callable[[], bool]) -> None:
    """Drive the policy the way the forward thread does, without the thread."""
    while not until():
        lane = queue.next_lane()
        assert lane is not None
        job = queue.head(lane)
        started = clock.now
        _, done = job.step(None)
        queue.ran(lane, clock.now - started, done)


def test_interactive_jobs_go_before_waiting_bulk_jobs_and_each_lane_is_fifo() -> None:
    clock, log = FakeClock(), list[str]()
    queue: LaneQueue[TimedJob] = LaneQueue()
    for name in ("bulk-1", "bulk-2"):
        queue.push("bulk", TimedJob(name, 2, 0.02, clock, log))
    for name in ("query-1", "query-2"):
        queue.push("interactive", TimedJob(name, 1, 0.005, clock, log))
    _run_policy(queue, clock, lambda: len(queue) == 0)
    assert log == ["query-1", "query-2", "bulk-1", "bulk-1", "bulk-2", "bulk-2"]


def test_a_query_runs_between_two_slices_of_a_bulk_batch() -> None:
    clock, log = FakeClock(), list[str]()
    queue: LaneQueue[TimedJob] = LaneQueue()
    queue.push("bulk", TimedJob("bulk", 4, 0.02, clock, log))
    _run_policy(queue, clock, lambda: log == ["bulk"])
    queue.push("interactive", TimedJob("query", 1, 0.005, clock, log))
    _run_policy(queue, clock, lambda: len(queue) == 0)
    assert log == ["bulk", "query", "bulk", "bulk", "bulk"]


def test_bulk_keeps_its_share_under_an_endless_stream_of_queries() -> None:
    clock, log = FakeClock(), list[str]()
    queue: LaneQueue[TimedJob] = LaneQueue()
    bulk = TimedJob("bulk", 200, 0.02, clock, log)  # 4 s of slices
    queue.push("bulk", bulk)
    queries = 0

    def refill() -> bool:
        nonlocal queries
        while len(queue) < 2 or queue.next_lane() is None:  # a query always waits
            queries += 1
            queue.push("interactive", TimedJob(f"query-{queries}", 1, 0.01, clock, log))
        return bulk.left == 0

    _run_policy(queue, clock, refill)
    bulk_s = log.count("bulk") * 0.02
    # Bulk finished, and had at least its share of the thread all along.
    assert bulk_s / clock.now >= (1 - INTERACTIVE_SHARE) - 0.02
    # And queries did get the rest: the share caps them, it does not shut them out.
    assert bulk_s / clock.now <= (1 - INTERACTIVE_SHARE) + 0.05
    # Within any 1.5 s of the run, bulk work was never shut out either.
    times, now = [], 0.0
    for name in log:
        now += 0.02 if name == "bulk" else 0.01
        times.append((now, name))
    for start in range(0, int(clock.now) - 1):
        window = [name for t, name in times if start <= t < start + 1.5]
        assert window.count("bulk") * 0.02 >= 0.2 * 1.5


def test_queries_run_while_no_bulk_waited_do_not_count_against_later_ones() -> None:
    clock, log = FakeClock(), list[str]()
    queue: LaneQueue[TimedJob] = LaneQueue()
    for n in range(200):  # 2 s of queries alone
        queue.push("interactive", TimedJob("alone", 1, 0.01, clock, log))
    _run_policy(queue, clock, lambda: len(queue) == 0)
    queue.push("bulk", TimedJob("bulk", 3, 0.02, clock, log))
    queue.push("interactive", TimedJob("query", 1, 0.005, clock, log))
    _run_policy(queue, clock, lambda: len(queue) == 0)
    assert log[200:] == ["query", "bulk", "bulk", "bulk"]


def test_lane_share_counts_only_the_last_window() -> None:
    share = LaneShare(window_s=1.0)
    share.record("interactive", 0.6)
    share.record("bulk", 0.3)
    assert share.seconds("interactive") == pytest.approx(0.6) and share.seconds("bulk") == pytest.approx(0.3)
    share.record("bulk", 0.3)  # 0.2 s of the interactive step now falls outside the window
    assert share.seconds("interactive") == pytest.approx(0.4)
    share.record("bulk", 0.5)  # all of it does
    assert share.seconds("interactive") == 0.0
    assert share.seconds("bulk") == pytest.approx(1.0)  # the whole window, its oldest step clipped
    share.clear()
    assert share.seconds("bulk") == 0.0


def test_slice_sizer_starts_at_its_guess_then_follows_the_measured_throughput() -> None:
    sizer = SliceSizer(target_s=0.02, initial_tokens=256)
    assert sizer.max_cost() == 256
    sizer.record(1000, 0.1)  # 10k tokens/s
    assert sizer.max_cost() == 200
    sizer.record(0, 0.01)  # nothing measured (a launch that did not wait)
    assert sizer.max_cost() == 200
    for _ in range(50):
        sizer.record(2000, 0.1)
    assert sizer.max_cost() == pytest.approx(400, abs=2)
    floored = SliceSizer(target_s=0.02, initial_tokens=256, min_tokens=300)
    floored.record(100, 0.1)  # 1k tokens/s: 20 tokens in 20 ms, but never under the floor
    assert floored.max_cost() == 300
    assert SliceSizer(target_s=None, initial_tokens=256).max_cost() is None  # slicing off


def test_the_thread_runs_a_query_before_bulk_jobs_queued_earlier() -> None:
    log: list[str] = []
    scheduler = ForwardScheduler(SliceSizer(0.02, 256))
    try:
        running = HeldJob("bulk-0", log)
        futures: list[Future[str]] = [scheduler.submit(running, interactive=False)]
        assert running.started.wait(GUARD_S)
        later = [HeldJob("bulk-1", log), HeldJob("bulk-2", log), HeldJob("query", log)]
        futures += [scheduler.submit(job, interactive=job.name == "query") for job in later]
        for job in [running, *later]:
            job.release.set()
        assert [f.result(GUARD_S) for f in futures] == ["bulk-0", "bulk-1", "bulk-2", "query"]
    finally:
        scheduler.close()
    assert log == ["bulk-0", "query", "bulk-1", "bulk-2"]


def test_a_failing_job_gets_its_error_and_the_thread_serves_on() -> None:
    log: list[str] = []
    scheduler = ForwardScheduler(SliceSizer(0.02, 256))
    try:
        failed = scheduler.submit(FailingJob(), interactive=False)
        with pytest.raises(RuntimeError, match="the model broke"):
            failed.result(GUARD_S)
        job = HeldJob("next", log)
        job.release.set()
        assert scheduler.submit(job, interactive=True).result(GUARD_S) == "next"
    finally:
        scheduler.close()


def test_a_cancelled_job_is_dropped_and_close_cancels_what_waits() -> None:
    log: list[str] = []
    scheduler = ForwardScheduler(SliceSizer(0.02, 256))
    running, dropped, waiting = HeldJob("running", log), HeldJob("dropped", log), HeldJob("waiting", log)
    first = scheduler.submit(running, interactive=False)
    assert running.started.wait(GUARD_S)
    gone = scheduler.submit(dropped, interactive=False)
    assert gone.cancel()
    running.release.set()
    assert first.result(GUARD_S) == "running"
    blocker = HeldJob("blocker", log)
    scheduler.submit(blocker, interactive=False)
    assert blocker.started.wait(GUARD_S)
    left = scheduler.submit(waiting, interactive=True)
    threading.Timer(0.05, blocker.release.set).start()  # lets close() find `waiting` queued
    scheduler.close()
    assert left.cancelled()
    assert "dropped" not in log and "waiting" not in log
