"""The queue owner and the in-process handle to it.

`QueueOwner` is the owner side of the future process boundary (issue 12): the
one token-budget `BatchQueue` and the `Dispatcher` that feeds the backends from
it. `InprocQueueHandle` is the `QueueHandle` for a front on the same event loop:
submit appends entries whose futures the dispatcher settles; abort cancels
them, and the queue drops cancelled entries unseen when it forms a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from embedserve.router.backend_client import BackendClient
from embedserve.router.batch_queue import BatchQueue, QueueEntry
from embedserve.router.dispatcher import Dispatcher, Kind
from embedserve.router.infer import Permits
from embedserve.router.metrics import Metrics
from embedserve.router.queue_handle import Admission, EntryResult, Submission, TokenizedInput


class QueueOwner:
    def __init__(
        self, queue: BatchQueue, backends: list[BackendClient], metrics: Metrics, kind: Kind, *, lanes: bool = False
    ) -> None:
        self.queue = queue
        self._dispatcher = Dispatcher(queue, backends, metrics, kind, interactive_slot=lanes)

    def append(self, entries: Sequence[QueueEntry]) -> None:
        # All or nothing: an entry that can never fit fails the call before any runs.
        for entry in entries:
            self.queue.check_fits(entry)
        for entry in entries:
            self.queue.append(entry)

    def start(self) -> None:
        self._dispatcher.start()

    async def stop(self) -> None:
        await self._dispatcher.stop()


class InprocQueueHandle:
    """A front's handle on a `QueueOwner` in its own process and event loop,
    with the server's concurrency permits (--router-workers 1)."""

    def __init__(self, owner: QueueOwner, max_concurrent_requests: int) -> None:
        self._owner = owner
        self.permits = Permits(max_concurrent_requests)

    @property
    def max_batch_requests(self) -> int | None:
        return self._owner.queue.max_batch_requests

    def admit(self, count: int, *, wait: bool) -> Admission:
        return Admission(count, self.permits.request(count, wait=wait))

    def release(self, admission: Admission) -> None:
        self.permits.withdraw(admission.count, admission.granted)

    def submit(
        self,
        inputs: Sequence[TokenizedInput],
        *,
        raw: bool,
        deadline: float | None,
        admission: Admission | None = None,
        interactive: bool = False,
        traceparent: str = "",
        wanted: int = 0,
    ) -> Submission:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[EntryResult]] = [loop.create_future() for _ in inputs]
        entries = [QueueEntry(i.input_ids, i.token_type_ids, future, raw, deadline, i.pool_start, interactive,
                              traceparent=traceparent, wanted=wanted)
                   for i, future in zip(inputs, futures)]
        self._owner.append(entries)
        return Submission(futures)

    def abort(self, submission: Submission) -> None:
        for future in submission.results:
            if not future.done():
                future.cancel()

    async def start(self) -> None:
        self._owner.start()

    async def close(self) -> None:
        await self._owner.stop()
