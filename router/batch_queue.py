"""The token-budget batch queue (TEI's core/src/queue.rs, in asyncio).

Owner side of the future process boundary: fronts reach it only through a
`QueueHandle` (router/queue_handle.py), never directly.

All state lives on one event loop, so no locks: handlers `append` entries and
await their futures; dispatch slots `await next_batch()`. Entries wait in one of
two lanes (router/lanes.py): bulk, and interactive. A normal slot takes bulk
entries, or interactive ones when no bulk waits; the interactive slot takes only
interactive ones, so a query never waits behind bulk entries in this queue. A
batch is formed the moment a slot asks for one, from whatever is queued in the
lanes it takes from, in arrival order:
- an entry whose future is done (its client went away) is dropped unseen
  (the transport counts the request in te_request_failure, once per request);
- the next entry goes in only if the batch still fits `max_batch_tokens`,
  counted as max_len x n for padded backends and as the token sum otherwise;
  otherwise it stays at the front (strict FIFO, no skipping ahead);
- at most `max_batch_requests` entries.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from embedserve.proto import tracing
from embedserve.proto.codec import pack_u32
from embedserve.proto.gen_pb import backend_pb2
from embedserve.router.errors import DeadlineExceededError
from embedserve.router.metrics import Metrics
from embedserve.router.multi_output import Wanted
from embedserve.router.queue_handle import EntryFuture

if TYPE_CHECKING:
    from embedserve.proto.tracing.otlp import EntrySpans


def _deadline_message(entry: QueueEntry, now: float) -> str:
    return f"deadline exceeded: the input waited {(now - entry.enqueued_at) * 1000:.0f} ms in the queue"


@dataclass(eq=False)
class QueueEntry:
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    future: EntryFuture
    # Wants one vector per token (/embed_all) instead of a pooled one.
    raw: bool = False
    # perf_counter() time after which the entry must not run; None: no deadline.
    deadline: float | None = None
    # Leading tokens mean pooling leaves out (the prompt, include_prompt false).
    pool_start: int = 0
    # Queued in the interactive lane (router/lanes.py).
    interactive: bool = False
    enqueued_at: float = field(default_factory=time.perf_counter)
    # The request span this input's spans join (W3C traceparent); "" untraced.
    traceparent: str = ""
    # Its `queue` and `inference` spans, made at append when traced (proto/tracing).
    trace: EntrySpans | None = None
    # bge-m3 outputs it also asks for (router/multi_output.Wanted bits).
    wanted: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class FormedBatch:
    entries: list[QueueEntry]
    message: backend_pb2.Batch
    token_sum: int
    cost: int
    formed_at: float
    # Only interactive entries: the backend runs it before bulk work.
    interactive: bool = False


class BatchQueue:
    def __init__(
        self,
        *,
        max_batch_tokens: int,
        max_batch_requests: int | None,
        padded: bool,
        position_offset: int,
        metrics: Metrics,
    ) -> None:
        if max_batch_tokens <= 0:
            raise ValueError("max_batch_tokens must be positive")
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self.padded = padded
        self._position_offset = position_offset
        self._metrics = metrics
        self._bulk: deque[QueueEntry] = deque()
        self._interactive: deque[QueueEntry] = deque()
        self._anything_queued = asyncio.Event()
        self._interactive_queued = asyncio.Event()

    def __len__(self) -> int:
        return len(self._bulk) + len(self._interactive)

    def check_fits(self, entry: QueueEntry) -> None:
        if len(entry) > self.max_batch_tokens:
            raise RuntimeError(
                f"an entry of {len(entry)} tokens can never fit max_batch_tokens {self.max_batch_tokens}. This is a bug."
            )

    def append(self, entry: QueueEntry) -> None:
        self.check_fits(entry)
        if entry.traceparent:
            tracer = tracing.active()
            if tracer is not None:
                entry.trace = tracer.queued(entry.traceparent)
        if entry.interactive:
            self._interactive.append(entry)
            self._interactive_queued.set()
        else:
            self._bulk.append(entry)
        self._metrics.queue_size.set(len(self))
        self._anything_queued.set()

    async def next_batch(self, *, interactive_only: bool = False) -> FormedBatch:
        """The next batch for a slot, once there is one: the interactive slot's
        (`interactive_only`) holds only interactive entries."""
        event = self._interactive_queued if interactive_only else self._anything_queued
        while True:
            batch = self.take_batch(interactive_only=interactive_only)
            if batch is not None:
                return batch
            event.clear()
            await event.wait()

    def take_batch(self, *, interactive_only: bool = False) -> FormedBatch | None:
        batch = None if interactive_only else self._take(self._bulk, interactive=False)
        if batch is None:
            batch = self._take(self._interactive, interactive=True)
        self._metrics.queue_size.set(len(self))
        return batch

    def _take(self, lane: deque[QueueEntry], *, interactive: bool) -> FormedBatch | None:
        entries: list[QueueEntry] = []
        max_len = token_sum = 0
        now = time.perf_counter()
        while lane:
            entry = lane[0]
            if entry.future.done():
                # Its request already failed or left, and was counted then, once.
                lane.popleft()
                if entry.trace is not None:
                    entry.trace.dropped("withdrawn: the request ended before the input ran")
                continue
            if entry.deadline is not None and now > entry.deadline:
                lane.popleft()
                message = _deadline_message(entry, now)
                entry.future.set_exception(DeadlineExceededError(message))
                if entry.trace is not None:
                    entry.trace.dropped(message)
                continue
            length = len(entry)
            cost = max(max_len, length) * (len(entries) + 1) if self.padded else token_sum + length
            if cost > self.max_batch_tokens:
                break
            lane.popleft()
            entries.append(entry)
            if entry.trace is not None:
                entry.trace.batched()
            max_len, token_sum = max(max_len, length), token_sum + length
            if self.max_batch_requests is not None and len(entries) >= self.max_batch_requests:
                break
        if not entries:
            return None
        cost = max_len * len(entries) if self.padded else token_sum
        message = self._flatten(entries, max_len)
        message.interactive = interactive
        return FormedBatch(entries, message, token_sum, cost, time.perf_counter(), interactive)

    def _flatten(self, entries: list[QueueEntry], max_len: int) -> backend_pb2.Batch:
        lengths = np.fromiter((len(e) for e in entries), dtype=np.int64, count=len(entries))
        cu = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum(lengths, out=cu[1:])
        positions = np.arange(cu[-1], dtype=np.int64) - np.repeat(cu[:-1], lengths) + self._position_offset
        return backend_pb2.Batch(
            input_ids=pack_u32(np.concatenate([e.input_ids for e in entries])),
            token_type_ids=pack_u32(np.concatenate([e.token_type_ids for e in entries])),
            position_ids=pack_u32(positions),
            cu_seq_lengths=pack_u32(cu),
            max_length=max_len,
            raw_indices=[i for i, e in enumerate(entries) if e.raw],
            pool_starts=pack_u32(np.fromiter((e.pool_start for e in entries), dtype=np.int64, count=len(entries)))
            if any(e.pool_start for e in entries) else b"",
            sparse_indices=[i for i, e in enumerate(entries) if e.wanted & Wanted.SPARSE],
            colbert_indices=[i for i, e in enumerate(entries) if e.wanted & Wanted.MULTI_VECTOR],
        )
