"""`RemoteQueueHandle`: a front's `QueueHandle` on the queue owner process
(--router-workers >= 2, issue 12).

Admit, submit and abort become messages on the front's one link to the owner
(router/owner_link.py); results come back packed, several calls per frame, and
settle the futures the front awaits. The owner enforces deadlines and permits;
this side keeps nothing but the futures of its own calls.

If the link drops, the owner is gone: every call in flight fails at once with
503 in TEI's format, so does every new one, and `on_lost` tells the server to
stop, non-zero; the launcher then handles it like a crashed router.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.router.errors import BackendError, BackendUnavailableError, EmbedServeError
from embedserve.router.metrics import Metrics, merge_models, snapshot_models
from embedserve.router.owner_link import (
    Abort,
    Admit,
    Admitted,
    Failed,
    FramedLink,
    Hello,
    Message,
    MetricsCollect,
    MetricsPart,
    MetricsQuery,
    MetricsReply,
    Ready,
    Release,
    Results,
    Submit,
    Welcome,
)
from embedserve.router.queue_handle import Admission, EntryResult, QueueHandle, Submission, TokenizedInput

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
METRICS_TIMEOUT_S = 5.0
OWNER_GONE = "the queue owner process is gone; this router process restarts"

_U32 = np.dtype("<u4")
_F32 = np.dtype("<f4")


def _error_classes() -> dict[str, type[EmbedServeError]]:
    found: dict[str, type[EmbedServeError]] = {}
    pending: list[type[EmbedServeError]] = [EmbedServeError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


_ERRORS = _error_classes()


def _rebuild_error(name: str, message: str) -> EmbedServeError:
    cls = _ERRORS.get(name, BackendError)
    try:
        return cls(message)
    except TypeError:
        return BackendError(message)


@dataclass(eq=False)
class RemoteSubmission(Submission):
    id: int = 0


@dataclass(eq=False)
class _Call:
    futures: list[asyncio.Future[EntryResult]]
    open: int


class RemoteQueueHandle:
    """The front's link to the owner, and the queue handle of the first served
    model; `model(i)` is model i's (each model has its own queue and permits)."""

    def __init__(self, metrics: Sequence[Metrics], on_lost: Callable[[], None] | None) -> None:
        self._metrics = list(metrics)
        self._on_lost = on_lost
        self._link = FramedLink(self._on_messages, self._link_lost)
        self._loop = asyncio.get_running_loop()
        self._welcome: asyncio.Future[Welcome] = self._loop.create_future()
        self._next_id = 0
        self._waiting: dict[int, Admission] = {}  # admitted? not answered yet
        self._calls: dict[int, _Call] = {}  # submitted, some inputs not settled
        self._metric_queries: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._max_batch_requests: int | None = None
        self._model_max_batch_requests: list[int] = []
        self.lost = False
        self._closing = False

    @classmethod
    async def connect(
        cls, path: str, front_index: int, metrics: Sequence[Metrics], on_lost: Callable[[], None] | None = None
    ) -> RemoteQueueHandle:
        handle = cls(metrics, on_lost)
        await handle._loop.create_unix_connection(lambda: handle._link, path)
        handle._link.send(Hello(front_index, os.getpid()))
        welcome = await asyncio.wait_for(handle._welcome, CONNECT_TIMEOUT_S)
        handle._max_batch_requests = welcome.max_batch_requests
        handle._model_max_batch_requests = welcome.model_max_batch_requests
        return handle

    @property
    def max_batch_requests(self) -> int | None:
        return self._max_batch_requests

    def model(self, index: int) -> QueueHandle:
        """Served model `index`'s queue handle, on this one link."""
        if index == 0:
            return self
        limits = self._model_max_batch_requests
        return RemoteModelQueue(self, index, (limits[index] if index < len(limits) else 0) or None)

    def announce_ready(self) -> None:
        """This front serves now: the launcher's readiness probe counts it."""
        self._link.send(Ready())

    # ---- QueueHandle

    def admit(self, count: int, *, wait: bool, model: int = 0) -> Admission:
        self._next_id += 1
        admission = Admission(count, self._loop.create_future(), self._next_id)
        if self.lost:
            admission.granted.set_exception(BackendUnavailableError(OWNER_GONE))
            return admission
        if not wait:
            # Decided by the owner when the inputs arrive: one message per call
            # and no round trip before tokenizing. Permits then count from
            # queueing to answer (the tokenizing phase is bounded by the pool);
            # a refused call answers 429 once tokenized, same status and body.
            admission.deferred = True
            admission.granted.set_result(True)
            return admission
        self._waiting[admission.id] = admission
        self._link.send(Admit(admission.id, count, wait, model))
        return admission

    def release(self, admission: Admission) -> None:
        granted = admission.granted
        if self._waiting.pop(admission.id, None) is not None:
            granted.cancel()
            self._link.send(Release(admission.id))  # leave the owner's line
        elif (not admission.submitted and not admission.deferred and granted.done() and not granted.cancelled()
              and granted.exception() is None and granted.result()):
            self._link.send(Release(admission.id))
        # Otherwise the owner frees the permits itself, once the inputs are done or aborted.
        if granted.done() and not granted.cancelled():
            granted.exception()  # retrieved: an error here was raised (or superseded) already

    def submit(
        self,
        inputs: Sequence[TokenizedInput],
        *,
        raw: bool,
        deadline: float | None,
        admission: Admission | None = None,
        interactive: bool = False,
        traceparent: str = "",
        model: int = 0,
        wanted: int = 0,
    ) -> Submission:
        if self.lost:
            raise BackendUnavailableError(OWNER_GONE)
        admit = 0
        if admission is None:
            self._next_id += 1
            call_id = self._next_id
        else:
            call_id = admission.id
            admission.submitted = True
            admit = admission.count if admission.deferred else 0
        futures: list[asyncio.Future[EntryResult]] = [self._loop.create_future() for _ in inputs]
        count = len(inputs)
        lengths = np.fromiter((len(i.input_ids) for i in inputs), dtype=_U32, count=count)
        pool_starts = (
            np.fromiter((i.pool_start for i in inputs), dtype=_U32, count=count).tobytes()
            if any(i.pool_start for i in inputs) else b""
        )
        self._link.send(Submit(
            call_id, raw, deadline,
            np.concatenate([i.input_ids for i in inputs]).astype(_U32, copy=False).tobytes(),
            np.concatenate([i.token_type_ids for i in inputs]).astype(_U32, copy=False).tobytes(),
            lengths.tobytes(), pool_starts, admit, interactive, traceparent, model, wanted,
        ))
        self._calls[call_id] = _Call(futures, count)
        return RemoteSubmission(futures, call_id)

    def abort(self, submission: Submission) -> None:
        for future in submission.results:
            if not future.done():
                future.cancel()
        assert isinstance(submission, RemoteSubmission)
        if self._calls.pop(submission.id, None) is not None:
            self._link.send(Abort(submission.id))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._closing = True
        self._link.close()

    # ---- /metrics: server-wide totals

    async def server_metrics(self, max_input_lengths: Sequence[int]) -> list[Metrics]:
        """Every process's counters merged (the owner collects them), per served model."""
        if self.lost:
            raise BackendUnavailableError(OWNER_GONE)
        self._next_id += 1
        query_id = self._next_id
        answer: asyncio.Future[dict[str, object]] = self._loop.create_future()
        self._metric_queries[query_id] = answer
        self._link.send(MetricsQuery(query_id))
        try:
            part = await asyncio.wait_for(answer, METRICS_TIMEOUT_S)
        except TimeoutError:
            raise BackendUnavailableError("the queue owner did not answer the metrics query") from None
        finally:
            self._metric_queries.pop(query_id, None)
        merged = [Metrics(length) for length in max_input_lengths]
        merge_models(merged, part)
        return merged

    # ---- messages from the owner

    def _on_messages(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, Results):
                self._results(message)
            elif isinstance(message, Admitted):
                admission = self._waiting.pop(message.id, None)
                if admission is not None and not admission.granted.done():
                    admission.granted.set_result(message.granted)
            elif isinstance(message, Failed):
                self._failed(message)
            elif isinstance(message, MetricsCollect):
                self._link.send(MetricsPart(message.id, snapshot_models(self._metrics)))
            elif isinstance(message, MetricsReply):
                query = self._metric_queries.get(message.id)
                if query is not None and not query.done():
                    query.set_result(message.snapshot)
            elif isinstance(message, Welcome) and not self._welcome.done():
                self._welcome.set_result(message)

    def _results(self, message: Results) -> None:
        values = np.frombuffer(message.values, dtype=_F32)
        offset = 0
        for k, call_id in enumerate(message.ids):
            size = message.sizes[k]
            end = offset + size
            call = self._calls.get(call_id)
            if call is not None:
                rows = message.rows[k]
                value = values[offset:end] if rows == 0 else values[offset:end].reshape(rows, size // rows)
                future = call.futures[message.indices[k]]
                if not future.done():
                    future.set_result(EntryResult(value, message.queue_s[k], message.inference_s[k]))
                self._settled(call_id, call)
            offset = end

    def _failed(self, message: Failed) -> None:
        call = self._calls.get(message.id)
        if call is None:
            return
        for index in message.indices:
            future = call.futures[index]
            if not future.done():
                future.set_exception(_rebuild_error(message.error, message.message))
            self._settled(message.id, call)

    def _settled(self, call_id: int, call: _Call) -> None:
        call.open -= 1
        if call.open == 0:
            del self._calls[call_id]

    def _link_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        if self._closing:
            return
        logger.error("lost the link to the queue owner (%s): failing %d call(s) in flight", exc or "closed",
                     len(self._calls) + len(self._waiting))
        error = BackendUnavailableError(OWNER_GONE)
        for admission in self._waiting.values():
            if not admission.granted.done():
                admission.granted.set_exception(error)
        self._waiting.clear()
        for call in self._calls.values():
            for future in call.futures:
                if not future.done():
                    future.set_exception(error)
        self._calls.clear()
        for query in self._metric_queries.values():
            if not query.done():
                query.set_exception(error)
        if not self._welcome.done():
            self._welcome.set_exception(ConnectionError("the queue owner closed the link before answering"))
        if self._on_lost is not None and not self._closing:
            self._on_lost()


class RemoteModelQueue:
    """Served model `index`'s queue handle on a front's one link to the owner:
    admit and submit name the model; the rest is the link's."""

    def __init__(self, link: RemoteQueueHandle, index: int, max_batch_requests: int | None) -> None:
        self._link = link
        self._index = index
        self._max_batch_requests = max_batch_requests

    @property
    def max_batch_requests(self) -> int | None:
        return self._max_batch_requests

    def admit(self, count: int, *, wait: bool) -> Admission:
        return self._link.admit(count, wait=wait, model=self._index)

    def release(self, admission: Admission) -> None:
        self._link.release(admission)

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
        return self._link.submit(inputs, raw=raw, deadline=deadline, admission=admission, interactive=interactive,
                                 traceparent=traceparent, model=self._index, wanted=wanted)

    def abort(self, submission: Submission) -> None:
        self._link.abort(submission)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass  # the link closes with the first model's handle
