"""Which batch the forward thread runs next: interactive work first, bulk work kept fed.

Forward passes run on one thread (backends/server.py). Batches arrive in one of two
lanes, set by the router per batch (`Batch.interactive`, --queue-policy priority):

- An *interactive* batch is small and someone waits on it; it runs whole, in one step.
- A *bulk* batch runs as consecutive slices of about `SliceSizer`'s target time each
  (~25 ms on CPU, less on a GPU; backends/batch_job.py, backends/slicing.py), one
  slice per step, so the thread can take something else between two slices.

When the thread is free it takes the next step of:
1. the oldest interactive batch, unless bulk work is waiting and interactive work has
   had `INTERACTIVE_SHARE` (75%) of the last `SHARE_WINDOW_S` (1.5 s) of the thread's
   contended time (time while bulk work waited); else
2. the oldest bulk batch (the one whose slices are under way, until it is done).

So under a flood of queries bulk work keeps at least 25% of the model's time over any
1.5 s (wall seconds of the forward thread per step, per lane), and a query waits behind
at most one bulk slice while queries stay within their share. Neither lane starves:
each is FIFO, and a waiting lane gets the thread within a bounded number of steps. When
contention begins, queries may use their share of a whole window before the first
bulk slice (up to 1.125 s); queries run while no bulk work waited never count. Nothing
polls: the thread sleeps on a condition until a batch is submitted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

Lane = Literal["interactive", "bulk"]
T = TypeVar("T")

# While bulk work waits, interactive work may use at most this share of the thread.
INTERACTIVE_SHARE = 0.75
# The share is judged over this much of the thread's recent busy time: long enough that
# one slice does not swing it, short enough that an idle minute ago does not count.
SHARE_WINDOW_S = 1.5
# Weight of the newest measurement in the throughput average.
THROUGHPUT_EWMA = 0.2


class Steppable(Protocol):
    """What the scheduler needs of a job (backends/batch_job.py's BatchJob)."""

    def step(self, max_cost: int | None) -> tuple[int, bool]:
        """Run the next step, at most `max_cost` tokens unless one sequence needs more
        (None: the whole batch). Returns the tokens whose results the step waited for
        (what its duration measured) and whether the job is finished."""

    def result(self) -> Any:
        """The finished job's answer."""


class SliceSizer:
    """How many tokens a bulk slice may cost to run for about `target_s`, from the
    backend's measured throughput (an exponentially weighted average), never below
    `min_tokens`. A `target_s` of None: bulk batches run whole."""

    def __init__(self, target_s: float | None, initial_tokens: int, min_tokens: int = 1) -> None:
        self._target_s = target_s
        self._initial_tokens = initial_tokens
        self._min_tokens = min_tokens
        self._tokens_per_s: float | None = None

    def max_cost(self) -> int | None:
        if self._target_s is None:
            return None
        if self._tokens_per_s is None:
            return self._initial_tokens
        return max(self._min_tokens, int(self._tokens_per_s * self._target_s))

    def record(self, cost: int, seconds: float) -> None:
        if cost <= 0 or seconds <= 0:
            return
        rate = cost / seconds
        # The first reading replaces the conservative guess outright.
        self._tokens_per_s = rate if self._tokens_per_s is None else \
            (1 - THROUGHPUT_EWMA) * self._tokens_per_s + THROUGHPUT_EWMA * rate


@dataclass(frozen=True)
class _Spent:
    lane: Lane
    seconds: float


class LaneShare:
    """Each lane's seconds in the thread's last `window_s` of contended busy time (both
    lanes had work), the oldest step counted only as far as it falls in the window."""

    def __init__(self, window_s: float = SHARE_WINDOW_S) -> None:
        self.window_s = window_s
        self._steps: deque[_Spent] = deque()
        self._seconds: dict[Lane, float] = {"interactive": 0.0, "bulk": 0.0}

    def record(self, lane: Lane, seconds: float) -> None:
        self._steps.append(_Spent(lane, seconds))
        self._seconds[lane] += seconds
        while len(self._steps) > 1 and self._total() - self._steps[0].seconds >= self.window_s:
            old = self._steps.popleft()
            self._seconds[old.lane] -= old.seconds

    def clear(self) -> None:
        self._steps.clear()
        self._seconds = {"interactive": 0.0, "bulk": 0.0}

    def seconds(self, lane: Lane) -> float:
        """`lane`'s seconds within the window."""
        overflow = self._total() - self.window_s
        if overflow > 0 and self._steps and self._steps[0].lane == lane:
            return max(0.0, self._seconds[lane] - overflow)
        return self._seconds[lane]

    def _total(self) -> float:
        return self._seconds["interactive"] + self._seconds["bulk"]


class LaneQueue(Generic[T]):
    """The policy alone, no thread: whose step comes next."""

    def __init__(self, share: LaneShare | None = None, interactive_share: float = INTERACTIVE_SHARE) -> None:
        self._lanes: dict[Lane, deque[T]] = {"interactive": deque(), "bulk": deque()}
        self._share = share or LaneShare()
        self._max_share = interactive_share

    def push(self, lane: Lane, job: T) -> None:
        self._lanes[lane].append(job)

    def __len__(self) -> int:
        return len(self._lanes["interactive"]) + len(self._lanes["bulk"])

    def next_lane(self) -> Lane | None:
        interactive, bulk = self._lanes["interactive"], self._lanes["bulk"]
        # Judged against the whole window even before it has filled: a contention that
        # just began lets queries burst up to their share of it, then bulk gets the rest.
        if interactive and (not bulk or self._share.seconds("interactive") < self._max_share * self._share.window_s):
            return "interactive"
        return "bulk" if bulk else None

    def head(self, lane: Lane) -> T:
        return self._lanes[lane][0]

    def ran(self, lane: Lane, seconds: float, done: bool) -> None:
        """The head of `lane` ran one step for `seconds`; `done`: it leaves the queue."""
        self._share.record(lane, seconds)
        if done:
            self._lanes[lane].popleft()
        if not self._lanes["bulk"]:
            # No bulk work waits: nothing to share, and queries run now must not count
            # against queries that arrive once bulk work is back.
            self._share.clear()

    def drain(self) -> list[T]:
        jobs = list(self._lanes["interactive"]) + list(self._lanes["bulk"])
        for queue in self._lanes.values():
            queue.clear()
        return jobs


@dataclass
class _Entry:
    job: Steppable
    lane: Lane
    future: Future[Any]


class ForwardScheduler:
    """The forward thread: runs submitted jobs' steps in `LaneQueue` order.

    `submit` may be called from any thread (the event loop); it takes a short lock,
    never waits on the model. A waiter that cancels its future drops the job at its
    next step.
    """

    def __init__(self, sizer: SliceSizer, initializer: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._sizer = sizer
        self._initializer = initializer
        self._clock = clock
        self._queue: LaneQueue[_Entry] = LaneQueue()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="forward", daemon=True)
        self._thread.start()

    def submit(self, job: Steppable, interactive: bool) -> Future[Any]:
        future: Future[Any] = Future()
        lane: Lane = "interactive" if interactive else "bulk"
        with self._wake:
            if self._closed:
                raise RuntimeError("the forward thread is closed")
            self._queue.push(lane, _Entry(job, lane, future))
            self._wake.notify()
        return future

    def close(self) -> None:
        """Stop after the step under way; batches still queued are cancelled."""
        with self._wake:
            self._closed = True
            left = self._queue.drain()
            self._wake.notify()
        for entry in left:
            entry.future.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _serve(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            with self._wake:
                lane = self._queue.next_lane()
                while lane is None and not self._closed:
                    self._wake.wait()
                    lane = self._queue.next_lane()
                if self._closed or lane is None:
                    return
                entry = self._queue.head(lane)
            if entry.future.cancelled():
                done, spent = True, 0.0
            else:
                done, spent = self._step(entry)
            with self._wake:
                if not self._closed:
                    self._queue.ran(lane, spent, done)

    def _step(self, entry: _Entry) -> tuple[bool, float]:
        bulk = entry.lane == "bulk"
        started = self._clock()
        try:
            cost, done = entry.job.step(self._sizer.max_cost() if bulk else None)
            spent = self._clock() - started
            if bulk:
                self._sizer.record(cost, spent)
            if done:
                _deliver(entry.future, entry.job.result())
            return done, spent
        except BaseException as exc:  # the batch's error, not the thread's: keep serving
            _deliver_error(entry.future, exc)
            return True, self._clock() - started


def _deliver(future: Future[T], value: T) -> None:
    """Set a result unless the waiter gave up (cancelled) meanwhile."""
    if future.set_running_or_notify_cancel():
        future.set_result(value)


def _deliver_error(future: Future[Any], error: BaseException) -> None:
    if future.set_running_or_notify_cancel():
        future.set_exception(error)
