"""Moves batches from the queue to the backends and results back to the callers.

Owner side of the future process boundary, beside the queue (router/queue_owner.py).

Each backend gets `SLOTS_PER_BACKEND` dispatch tasks. With two, the next batch is
already formed and sitting in the backend's receive queue while the current one
runs, so the device never waits for the router between batches. Under
`--queue-policy priority` each backend also gets one interactive slot: it sends
interactive inputs the moment they are queued, however busy the normal slots
are, and the backend runs them ahead of its bulk work (router/lanes.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

from embedserve.proto import tracing
from embedserve.proto.gen_pb import backend_pb2
from embedserve.router.backend_client import BackendClient, BatchOutput
from embedserve.router.batch_queue import BatchQueue, FormedBatch
from embedserve.router.errors import BackendDownError, BackendError, EmbedServeError
from embedserve.router.metrics import Metrics
from embedserve.router.multi_output import Wanted, pack
from embedserve.router.queue_handle import EntryResult

if TYPE_CHECKING:
    from embedserve.proto.tracing.otlp import BatchTrace

logger = logging.getLogger(__name__)

SLOTS_PER_BACKEND = 2

Kind = Literal["embed", "predict"]


class Dispatcher:
    def __init__(
        self, queue: BatchQueue, backends: list[BackendClient], metrics: Metrics, kind: Kind, *, interactive_slot: bool = False
    ) -> None:
        self._queue = queue
        self._interactive_slot = interactive_slot
        self._backends = backends
        self._metrics = metrics
        self._kind = kind
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for backend in self._backends:
            slots = [False] * SLOTS_PER_BACKEND + ([True] if self._interactive_slot else [])
            for index, interactive_only in enumerate(slots):
                name = f"dispatch-{backend.name}-{'interactive' if interactive_only else index}"
                task = asyncio.create_task(self._run_slot(backend, interactive_only), name=name)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_slot(self, backend: BackendClient, interactive_only: bool) -> None:
        call: Callable[[backend_pb2.Batch], Awaitable[BatchOutput]] = (
            backend.embed if self._kind == "embed" else backend.predict
        )
        while True:
            # A backend that is down takes no batches: they wait in the queue for it
            # (or go to another backend) instead of failing one after the other.
            await backend.wait_until_up()
            batch = await self._queue.next_batch(interactive_only=interactive_only)
            self._metrics.batch_next_size.observe(len(batch.entries))
            self._metrics.batch_next_tokens.observe(batch.token_sum)
            started = time.perf_counter()
            trace = _batch_trace(batch, self._kind, backend.name)
            if trace is not None:
                batch.message.traceparent = trace.traceparent()
            try:
                output = await call(batch.message)
                values = _split_results(batch, output)
            except BackendDownError as exc:
                logger.warning("%s is down; its batch of %d fails and it gets no more until healthy",
                               backend.name, len(batch.entries))
                backend.mark_down()
                _fail(batch, exc, trace)
                continue
            except EmbedServeError as exc:
                _fail(batch, exc, trace)
                continue
            except Exception as exc:  # keep the slot alive whatever the batch did
                logger.exception("dispatch failed")
                _fail(batch, BackendError(f"Backend error: {exc}"), trace)
                continue
            if trace is not None:
                trace.finish()
            self._metrics.backend_batch_tokens.observe(output.batch_tokens)
            self._metrics.backend_model_cpu_seconds.inc(output.model_cpu_s)
            inference_s = time.perf_counter() - started
            for entry, value in zip(batch.entries, values):
                if not entry.future.done():
                    entry.future.set_result(EntryResult(value, batch.formed_at - entry.enqueued_at, inference_s))


def _split_results(batch: FormedBatch, output: BatchOutput) -> list[np.ndarray]:
    """One result per entry: its pooled row, or its [tokens, hidden] matrix if raw."""
    raw_count = sum(1 for e in batch.entries if e.raw)
    raw_tokens = sum(len(e) for e in batch.entries if e.raw)
    if output.pooled.shape[0] != len(batch.entries) - raw_count or output.token_rows.shape[0] != raw_tokens:
        raise BackendError(
            f"Backend error: {output.pooled.shape[0]} pooled rows and {output.token_rows.shape[0]} token rows "
            f"for a batch of {len(batch.entries)} ({raw_count} raw, {raw_tokens} raw tokens). This is a bug."
        )
    values: list[np.ndarray] = []
    pooled_row = token_row = 0
    for entry in batch.entries:
        if entry.raw:
            values.append(output.token_rows[token_row : token_row + len(entry)])
            token_row += len(entry)
        else:
            values.append(output.pooled[pooled_row])
            pooled_row += 1
    if any(entry.wanted for entry in batch.entries):
        return _with_head_outputs(batch, output, values)
    return values


def _with_head_outputs(batch: FormedBatch, output: BatchOutput, pooled: list[np.ndarray]) -> list[np.ndarray]:
    """bge-m3: each entry that asked for lexical weights or multi-vectors gets them
    packed behind its pooled row (router/multi_output.py)."""
    weights = output.sparse_weights if output.sparse_weights is not None else np.empty(0, np.float32)
    vectors = output.colbert_rows if output.colbert_rows is not None else np.empty((0, 0), np.float32)
    wanted_weights = sum(len(e) for e in batch.entries if e.wanted & Wanted.SPARSE)
    wanted_vectors = sum(len(e) - 1 for e in batch.entries if e.wanted & Wanted.MULTI_VECTOR)
    if weights.shape[0] != wanted_weights or vectors.shape[0] != wanted_vectors:
        raise BackendError(f"Backend error: {weights.shape[0]} lexical weights and {vectors.shape[0]} multi-vectors "
                           f"for {wanted_weights} and {wanted_vectors} asked. This is a bug.")
    values: list[np.ndarray] = []
    weight_row = vector_row = 0
    for entry, row in zip(batch.entries, pooled):
        entry_weights = entry_vectors = None
        if entry.wanted & Wanted.SPARSE:
            entry_weights = weights[weight_row : weight_row + len(entry)]
            weight_row += len(entry)
        if entry.wanted & Wanted.MULTI_VECTOR:
            entry_vectors = vectors[vector_row : vector_row + len(entry) - 1]
            vector_row += len(entry) - 1
        values.append(pack(row, entry_weights, entry_vectors) if entry.wanted else row)
    return values


def _batch_trace(batch: FormedBatch, kind: Kind, backend: str) -> BatchTrace | None:
    """The batch's span, if any of its inputs is traced (proto/tracing)."""
    tracer = tracing.active()
    if tracer is None:
        return None
    traced = [entry.trace for entry in batch.entries if entry.trace is not None]
    return tracer.batch(kind, traced, len(batch.entries), batch.token_sum, backend) if traced else None


def _fail(batch: FormedBatch, error: EmbedServeError, trace: BatchTrace | None = None) -> None:
    if trace is not None:
        trace.finish(error.message)
    for entry in batch.entries:
        if not entry.future.done():
            entry.future.set_exception(error)
