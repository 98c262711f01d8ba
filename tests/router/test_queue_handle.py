"""The in-process queue handle: submit and abort, as a front sees the queue.

The queue owner gets no backends here, so nothing dispatches: each test forms
batches itself with `take_batch`, to see exactly what would reach a backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from embedserve.router.batch_queue import BatchQueue
from embedserve.router.errors import DeadlineExceededError
from embedserve.router.infer import _await_or_abort
from embedserve.router.metrics import Metrics
from embedserve.router.queue_handle import Admission, EntryResult, QueueHandle, Submission, TokenizedInput
from embedserve.router.queue_owner import InprocQueueHandle, QueueOwner


def _handle(budget: int = 100, max_requests: int | None = None) -> tuple[InprocQueueHandle, BatchQueue]:
    queue = BatchQueue(
        max_batch_tokens=budget, max_batch_requests=max_requests, padded=False, position_offset=0, metrics=Metrics(512)
    )
    return InprocQueueHandle(QueueOwner(queue, [], Metrics(512), "embed"), 512), queue


def _input(length: int, first_id: int = 1) -> TokenizedInput:
    return TokenizedInput(np.arange(first_id, first_id + length, dtype=np.uint32), np.zeros(length, np.uint32))


def test_the_in_process_handle_is_a_queue_handle() -> None:
    handle: QueueHandle = _handle(max_requests=7)[0]
    assert handle.max_batch_requests == 7


def test_submit_queues_every_input_in_order_with_its_options() -> None:
    async def scenario() -> None:
        handle, queue = _handle()
        deadline = time.perf_counter() + 60
        first = handle.submit([_input(3, 10), _input(2, 20)], raw=True, deadline=deadline)
        second = handle.submit([_input(4, 30)], raw=False, deadline=None)
        batch = queue.take_batch()
        assert batch is not None
        assert [e.future for e in batch.entries] == first.results + second.results
        assert [int(e.input_ids[0]) for e in batch.entries] == [10, 20, 30]
        assert [(e.raw, e.deadline) for e in batch.entries] == [(True, deadline), (True, deadline), (False, None)]

    asyncio.run(scenario())


def test_abort_withdraws_what_has_not_run_and_spares_the_rest() -> None:
    async def scenario() -> None:
        handle, queue = _handle()
        gone = handle.submit([_input(3, 10), _input(3, 20)], raw=False, deadline=None)
        kept = handle.submit([_input(3, 30)], raw=False, deadline=None)
        handle.abort(gone)
        assert all(future.cancelled() for future in gone.results)
        batch = queue.take_batch()
        assert batch is not None and [e.future for e in batch.entries] == kept.results
        assert queue.take_batch() is None

    asyncio.run(scenario())


def test_abort_leaves_settled_results_alone() -> None:
    async def scenario() -> None:
        handle, _ = _handle()
        submission = handle.submit([_input(2), _input(2)], raw=False, deadline=None)
        done = EntryResult(np.zeros(4, np.float32), 0.0, 0.0)
        submission.results[0].set_result(done)
        handle.abort(submission)
        assert submission.results[0].result() is done
        assert submission.results[1].cancelled()

    asyncio.run(scenario())


def test_submit_is_all_or_nothing() -> None:
    async def scenario() -> None:
        handle, queue = _handle(budget=10)
        with pytest.raises(RuntimeError, match="This is a bug"):
            handle.submit([_input(3), _input(11)], raw=False, deadline=None)
        assert len(queue) == 0

    asyncio.run(scenario())


class RecordingHandle:
    """A QueueHandle whose submissions never run; it records what was aborted."""

    def __init__(self) -> None:
        self.aborted: list[Submission] = []

    @property
    def max_batch_requests(self) -> int | None:
        return None

    def admit(self, count: int, *, wait: bool) -> Admission:
        granted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        granted.set_result(True)
        return Admission(count, granted)

    def release(self, admission: Admission) -> None:
        pass

    def submit(
        self, inputs: Sequence[TokenizedInput], *, raw: bool, deadline: float | None, admission: Admission | None = None,
        interactive: bool = False, traceparent: str = "",
    ) -> Submission:
        loop = asyncio.get_running_loop()
        return Submission([loop.create_future() for _ in inputs])

    def abort(self, submission: Submission) -> None:
        self.aborted.append(submission)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_passed_deadline_fails_the_waiting_inputs_and_aborts_them() -> None:
    async def scenario() -> None:
        handle = RecordingHandle()
        submission = handle.submit([_input(2), _input(2)], raw=False, deadline=None)
        with pytest.raises(DeadlineExceededError):
            await _await_or_abort(handle, submission, time.perf_counter() + 0.01)
        assert handle.aborted == [submission]
        assert all(isinstance(f.exception(), DeadlineExceededError) for f in submission.results)

    asyncio.run(scenario())


def test_a_cancelled_caller_aborts_its_submission() -> None:
    async def scenario() -> None:
        handle = RecordingHandle()
        submission = handle.submit([_input(2)], raw=False, deadline=None)
        waiter = asyncio.ensure_future(_await_or_abort(handle, submission, None))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert handle.aborted == [submission]

    asyncio.run(scenario())


def test_a_failed_input_aborts_the_others() -> None:
    async def scenario() -> None:
        handle, queue = _handle()
        submission = handle.submit([_input(2), _input(2)], raw=False, deadline=None)
        submission.results[0].set_exception(DeadlineExceededError("first one failed"))
        with pytest.raises(DeadlineExceededError, match="first one failed"):
            await _await_or_abort(handle, submission, None)
        assert submission.results[1].cancelled()
        assert queue.take_batch() is None

    asyncio.run(scenario())
