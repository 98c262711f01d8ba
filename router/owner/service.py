"""The queue owner's side of every front's link: admission, submit, abort,
results, metrics (router/owner_link.py has the messages).

The owner runs one `QueueOwner` (token-budget queue + dispatcher) and one
`Permits` per served model; a message names its model by index. A front's entries go into the same queue as everyone's;
each entry's future is a `RemoteSlot` that hands its result to the front's
link, which packs everything finished in one iteration into one Results
message. A front whose link drops loses its calls: their queued entries are
dropped unseen and their permits come back; other fronts are untouched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from embedserve.router.batch_queue import QueueEntry
from embedserve.router.errors import BackendError, EmbedServeError, OverloadedError
from embedserve.router.infer import Permits
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
    Probe,
    ProbeReply,
    Ready,
    Release,
    Results,
    Submit,
    Welcome,
)
from embedserve.router.queue_handle import EntryResult
from embedserve.router.queue_owner import QueueOwner

logger = logging.getLogger(__name__)

# A front that does not answer a metrics collection within this is left out.
METRICS_COLLECT_TIMEOUT_S = 2.0

_U32 = np.dtype("<u4")


class RemoteSlot:
    """An entry's future in the owner: settling it sends the outcome to its front."""

    __slots__ = ("call", "index", "_done")

    def __init__(self, call: OwnerCall, index: int) -> None:
        self.call = call
        self.index = index
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: EntryResult, /) -> None:
        if self._done:
            return
        self._done = True
        self.call.front.add_result(self.call, self.index, result)

    def set_exception(self, exception: BaseException, /) -> None:
        if self._done:
            return
        self._done = True
        self.call.front.add_failure(self.call, self.index, exception)

    def cancel(self) -> None:
        self._done = True


@dataclass(eq=False)
class OwnerCall:
    front: FrontConnection
    id: int
    permits: int
    granted: asyncio.Future[bool] | None
    # The served model whose queue and permits the call uses.
    model: int = 0
    # Permits taken with the submit (no Admit before it).
    held: bool = False
    slots: list[RemoteSlot] = field(default_factory=list)
    open_entries: int = 0


class FrontConnection:
    """The owner's end of one front's link (or of the launcher's probe)."""

    def __init__(self, service: OwnerService) -> None:
        self._service = service
        self.link = FramedLink(self._on_messages, self._on_lost)
        self.link.before_flush = self._pack_results
        self.front_index: int | None = None
        self.ready = False
        self.calls: dict[int, OwnerCall] = {}
        # Finished inputs waiting for the next frame.
        self._ids: list[int] = []
        self._indices: list[int] = []
        self._rows: list[int] = []
        self._sizes: list[int] = []
        self._queue_s: list[float] = []
        self._inference_s: list[float] = []
        self._values: list[np.ndarray] = []

    # ---- messages from the front

    def _on_messages(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, Submit):
                self._submit(message)
            elif isinstance(message, Admit):
                self._admit(message)
            elif isinstance(message, (Abort, Release)):
                self._end_call(message.id, withdraw=True)
            elif isinstance(message, MetricsPart):
                self._service.metrics_part(self, message)
            elif isinstance(message, MetricsQuery):
                self._service.collect_metrics(self, message.id)
            elif isinstance(message, Hello):
                self.front_index = message.front_index
                self._service.fronts.add(self)
                owners = self._service.owners
                self.link.send(Welcome(owners[0].queue.max_batch_requests,
                                       [owner.queue.max_batch_requests or 0 for owner in owners]))
                logger.info("front %d (pid %d) connected", message.front_index, message.pid)
            elif isinstance(message, Ready):
                self.ready = True
            elif isinstance(message, Probe):
                self.link.send(ProbeReply(self._service.ready_fronts()))

    def _admit(self, message: Admit) -> None:
        if not 0 <= message.model < len(self._service.owners):
            self.link.send(Admitted(message.id, False))
            return
        granted = self._service.permits[message.model].request(message.count, wait=message.wait)
        if granted.done():
            if granted.result():
                self.calls[message.id] = OwnerCall(self, message.id, message.count, granted, message.model)
            self.link.send(Admitted(message.id, granted.result()))
            return
        self.calls[message.id] = OwnerCall(self, message.id, message.count, granted, message.model)

        def answer(future: asyncio.Future[bool], call_id: int = message.id) -> None:
            if not future.cancelled():
                self.link.send(Admitted(call_id, future.result()))

        granted.add_done_callback(answer)

    def _submit(self, message: Submit) -> None:
        call = self.calls.get(message.id)
        if call is None:
            error: EmbedServeError | None = None
            if not 0 <= message.model < len(self._service.owners):
                error = BackendError(f"no served model {message.model}. This is a bug.")
            elif message.admit and not self._service.permits[message.model].try_acquire(message.admit):
                error = OverloadedError()
            if error is not None:
                self.link.send(Failed(message.id, list(range(len(message.lengths) // 4)), type(error).__name__,
                                      error.message))
                return
            call = self.calls[message.id] = OwnerCall(self, message.id, message.admit, None, message.model,
                                                      held=message.admit > 0)
        lengths = np.frombuffer(message.lengths, dtype=_U32)
        ids = np.frombuffer(message.input_ids, dtype=_U32)
        types = np.frombuffer(message.token_type_ids, dtype=_U32)
        starts = np.frombuffer(message.pool_starts, dtype=_U32) if message.pool_starts else None
        length_list = lengths.tolist()
        if len(ids) != len(types) or sum(length_list) != len(ids):
            self._fail_call(call, range(len(lengths)), BackendError("malformed submit from a front. This is a bug."))
            return
        entries: list[QueueEntry] = []
        offset = 0
        for index, length in enumerate(length_list):
            slot = RemoteSlot(call, index)
            call.slots.append(slot)
            end = offset + length
            entries.append(QueueEntry(ids[offset:end], types[offset:end], slot, message.raw, message.deadline,
                                      int(starts[index]) if starts is not None else 0, message.interactive,
                                      traceparent=message.traceparent, wanted=message.wanted))
            offset = end
        call.open_entries = len(entries)
        try:
            self._service.owners[call.model].append(entries)
        except RuntimeError as exc:
            self._fail_call(call, range(len(entries)), BackendError(str(exc)))

    def _fail_call(self, call: OwnerCall, indices: range, error: EmbedServeError) -> None:
        for slot in call.slots:
            slot.cancel()
        self.link.send(Failed(call.id, list(indices), type(error).__name__, error.message))
        self._end_call(call.id, withdraw=True)

    def _end_call(self, call_id: int, *, withdraw: bool) -> None:
        """The call is over: queued entries are dropped unseen, permits come back."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return
        if withdraw:
            for slot in call.slots:
                slot.cancel()
        permits = self._service.permits[call.model]
        if call.granted is not None:
            permits.withdraw(call.permits, call.granted)
        elif call.held:
            permits.release(call.permits)

    # ---- outcomes from the dispatcher (through RemoteSlot)

    def add_result(self, call: OwnerCall, index: int, result: EntryResult) -> None:
        values = result.values
        self._ids.append(call.id)
        self._indices.append(index)
        self._rows.append(values.shape[0] if values.ndim == 2 else 0)
        self._sizes.append(values.size)
        self._queue_s.append(result.queue_time_s)
        self._inference_s.append(result.inference_time_s)
        self._values.append(values)
        self._entry_done(call)
        self.link.wake()

    def add_failure(self, call: OwnerCall, index: int, exception: BaseException) -> None:
        error = exception if isinstance(exception, EmbedServeError) else BackendError(f"Backend error: {exception}")
        self.link.send(Failed(call.id, [index], type(error).__name__, error.message))
        self._entry_done(call)

    def _entry_done(self, call: OwnerCall) -> None:
        call.open_entries -= 1
        if call.open_entries == 0:
            self._end_call(call.id, withdraw=False)

    def _pack_results(self) -> None:
        if not self._ids:
            return
        values = np.concatenate([v.ravel() for v in self._values]).astype(np.float32, copy=False)
        self.link.send(Results(self._ids, self._indices, self._rows, self._sizes, self._queue_s,
                               self._inference_s, values.tobytes()))
        self._ids, self._indices, self._rows, self._sizes = [], [], [], []
        self._queue_s, self._inference_s, self._values = [], [], []

    # ---- the link dropped

    def _on_lost(self, exc: Exception | None) -> None:
        if self.front_index is not None:
            log = logger.warning if self.calls else logger.info
            log("front %d disconnected; its %d call(s) in flight are withdrawn", self.front_index, len(self.calls))
        for call_id in list(self.calls):
            self._end_call(call_id, withdraw=True)
        self._service.connection_gone(self)


@dataclass
class _Collection:
    asker: FrontConnection
    query_id: int
    waiting: set[FrontConnection]
    parts: list[dict[str, object]]
    timer: asyncio.TimerHandle | None = None


class OwnerService:
    """Per served model, in RouterConfig.models order: its queue owner, its
    permits, its metrics (and the bucket layout's max input length)."""

    def __init__(self, owners: list[QueueOwner], permits: list[Permits], metrics: list[Metrics],
                 max_input_lengths: list[int]) -> None:
        self.owners = owners
        self.permits = permits
        self.metrics = metrics
        self._max_input_lengths = max_input_lengths
        self.fronts: set[FrontConnection] = set()
        self._connections = 0
        self._collections: dict[int, _Collection] = {}
        self._next_collection = 0
        # Set while no connection is open: the owner's drain waits for it.
        self.no_connections = asyncio.Event()
        self.no_connections.set()

    def new_connection(self) -> FramedLink:
        self._connections += 1
        self.no_connections.clear()
        return FrontConnection(self).link

    def connection_gone(self, front: FrontConnection) -> None:
        self.fronts.discard(front)
        for collection_id, collection in list(self._collections.items()):
            collection.waiting.discard(front)
            if not collection.waiting:
                self._finish_collection(collection_id)
        self._connections -= 1
        if self._connections == 0:
            self.no_connections.set()

    def ready_fronts(self) -> list[int]:
        return sorted(f.front_index for f in self.fronts if f.ready and f.front_index is not None)

    # ---- /metrics: the asking front gets every process's counters merged

    def collect_metrics(self, asker: FrontConnection, query_id: int) -> None:
        self._next_collection += 1
        collection_id = self._next_collection
        collection = _Collection(asker, query_id, set(self.fronts), [snapshot_models(self.metrics)])
        self._collections[collection_id] = collection
        for front in collection.waiting:
            front.link.send(MetricsCollect(collection_id))
        collection.timer = asyncio.get_running_loop().call_later(
            METRICS_COLLECT_TIMEOUT_S, self._finish_collection, collection_id
        )

    def metrics_part(self, front: FrontConnection, message: MetricsPart) -> None:
        collection = self._collections.get(message.id)
        if collection is None or front not in collection.waiting:
            return  # too late: the answer went without it
        collection.parts.append(message.snapshot)
        collection.waiting.discard(front)
        if not collection.waiting:
            self._finish_collection(message.id)

    def _finish_collection(self, collection_id: int) -> None:
        collection = self._collections.pop(collection_id, None)
        if collection is None:
            return
        if collection.timer is not None:
            collection.timer.cancel()
        merged = [Metrics(length) for length in self._max_input_lengths]
        for part in collection.parts:
            merge_models(merged, part)
        collection.asker.link.send(MetricsReply(collection.query_id, snapshot_models(merged)))
