"""One input list in, one result per input out: permits, tokenization, queueing.

The operations (router/operations.py) call `Inference`; it asks for the
concurrency permits and turns tokenizer pool errors into router errors, for
every call in one place. Front side of the process boundary: it reaches the
permits and the batch queue only through its `QueueHandle`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from embedserve.proto import tracing
from embedserve.router.errors import (
    BackendUnavailableError,
    DeadlineExceededError,
    EmbedServeError,
    OverloadedError,
    TokenizerError,
    input_validation,
)
from embedserve.router.lanes import FIFO, LanePolicy, Priority
from embedserve.router.metrics import Metrics
from embedserve.router.multi_output import Wanted
from embedserve.router.queue_handle import EntryResult, QueueHandle, Submission, TokenizedInput
from embedserve.tokenizer_pool.pool import (
    Encoding,
    Input,
    InvalidInputError,
    ModelTokenizer,
    TokenFormat,
    TokenizerFailedError,
    TokenizerUnavailableError,
)

T = TypeVar("T")


Family = Literal["embed", "predict"]
Method = Literal["single", "batch"]


@dataclass(frozen=True)
class EncodeOptions:
    truncate: bool
    direction: Literal["right", "left"] = "right"
    prompt: str | None = None


@dataclass(frozen=True)
class ResponseMetadata:
    """TEI's x-* headers: counts summed; phase times averaged per input."""

    compute_characters: int
    compute_tokens: int
    total_time_s: float
    tokenization_time_s: float
    queue_time_s: float
    inference_time_s: float

    def headers(self) -> dict[str, str]:
        def ms(seconds: float) -> str:
            return str(int(seconds * 1000))

        return {
            "x-compute-type": "gpu+optimized",
            "x-compute-time": ms(self.total_time_s),
            "x-compute-characters": str(self.compute_characters),
            "x-compute-tokens": str(self.compute_tokens),
            "x-total-time": ms(self.total_time_s),
            "x-tokenization-time": ms(self.tokenization_time_s),
            "x-queue-time": ms(self.queue_time_s),
            "x-inference-time": ms(self.inference_time_s),
        }


@dataclass(frozen=True)
class CallLimits:
    """How the transport wants the call run."""

    # Queue for permits instead of failing with 429 (gRPC stream items).
    wait_for_permit: bool = False
    # perf_counter() instant after which inputs still queued fail; None: none.
    deadline: float | None = None
    # The client's x-priority (router/lanes.py); None: the inputs' size decides.
    priority: Priority | None = None


@dataclass(frozen=True)
class InferenceResult:
    rows: list[np.ndarray]
    token_counts: list[int]
    metadata: ResponseMetadata
    # Queued in the interactive lane (router/lanes.py).
    interactive: bool = False
    # Each input's token ids, as queued (bge-m3 lexical weights are keyed by them).
    input_ids: list[np.ndarray] = field(default_factory=list)


class Permits:
    """Concurrency permits, counted per input (TEI's semaphore).

    HTTP and unary gRPC calls try and get 429 / RESOURCE_EXHAUSTED at once;
    gRPC stream items wait their turn, first come first served. `request`
    answers with a future so that the queue owner process can grant a front's
    waiting call without a task per call.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._waiters: deque[tuple[int, asyncio.Future[bool]]] = deque()

    def try_acquire(self, count: int) -> bool:
        if count > self.available or self._waiters:
            return False
        self.available -= count
        return True

    def request(self, count: int, *, wait: bool) -> asyncio.Future[bool]:
        """A future that resolves True once `count` permits are held, False if refused."""
        granted: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.try_acquire(count):
            granted.set_result(True)
        elif not wait or count > self.capacity:  # the latter could never be granted
            granted.set_result(False)
        else:
            self._waiters.append((count, granted))
        return granted

    def withdraw(self, count: int, granted: asyncio.Future[bool]) -> None:
        """End a `request`: give its permits back if held, or leave the line."""
        if not granted.done():
            self._waiters.remove((count, granted))
            granted.cancel()
            self._wake()
        elif not granted.cancelled() and granted.result():
            self.release(count)

    async def acquire(self, count: int) -> None:
        granted = self.request(count, wait=True)
        try:
            if not await asyncio.shield(granted):
                raise OverloadedError()
        except asyncio.CancelledError:
            self.withdraw(count, granted)
            raise

    def release(self, count: int) -> None:
        self.available = min(self.capacity, self.available + count)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            count, granted = self._waiters.popleft()
            if granted.done():
                continue
            self.available -= count
            granted.set_result(True)


class Inference:
    def __init__(
        self, tokenizer: ModelTokenizer, queue: QueueHandle, metrics: Metrics, lanes: LanePolicy = FIFO
    ) -> None:
        self._tokenizer = tokenizer
        self._queue = queue
        self._metrics = metrics
        self._lanes = lanes

    async def run(
        self,
        inputs: list[Input],
        options: EncodeOptions,
        *,
        raw: bool = False,
        family: Family = "embed",
        method: Method = "single",
        limits: CallLimits = CallLimits(),
        wanted: Wanted = Wanted.NONE,
    ) -> InferenceResult:
        """Tokenize, queue and run every input, and count it in the metrics.

        `raw` asks for per-token vectors; `limits.wait_for_permit` queues for
        capacity instead of failing with 429 (gRPC streams); past `limits.deadline`
        (a perf_counter() time) inputs still queued are withdrawn and the call
        fails with DeadlineExceededError; `limits.priority`, with the inputs' size,
        picks the queue lane (router/lanes.py); `wanted`, bge-m3 outputs each input
        also asks for (router/multi_output.py).
        """
        metrics = self._metrics
        metrics.request_count.inc(method=method)
        (metrics.embed_count if family == "embed" else metrics.predict_count).inc(len(inputs))
        result = await self._run(inputs, options, raw, limits, wanted)
        (metrics.embed_success if family == "embed" else metrics.predict_success).inc(len(inputs))
        metrics.request_success.inc(method=method)
        meta = result.metadata
        metrics.request_tokenization_duration.observe(meta.tokenization_time_s)
        metrics.request_queue_duration.observe(meta.queue_time_s)
        lane = metrics.interactive_queue_duration if result.interactive else metrics.bulk_queue_duration
        lane.observe(meta.queue_time_s)
        metrics.request_inference_duration.observe(meta.inference_time_s)
        durations = metrics.embed_durations if family == "embed" else metrics.predict_durations
        durations.observe(meta, len(inputs))
        tracing.record_request(meta)
        return result

    async def _run(
        self, inputs: list[Input], options: EncodeOptions, raw: bool, limits: CallLimits, wanted: Wanted
    ) -> InferenceResult:
        started = time.perf_counter()
        deadline = limits.deadline
        admission = self._queue.admit(len(inputs), wait=limits.wait_for_permit)
        granted = admission.granted
        try:
            # The in-process handle answers at once: a refused call costs no
            # tokenization, as before the split. With a queue owner process a
            # round trip would come first; instead the call tokenizes meanwhile
            # (a waiting gRPC stream item), or the owner decides when the inputs
            # arrive (no wait: `deferred`, one message per call). Every admitted
            # call gains the trip; only a refused one (an overloaded server)
            # pays for a tokenization it did not need.
            if granted.done() and not granted.result():
                raise OverloadedError()
            try:
                with tracing.stage("encode"):
                    encodings = await self._encode(inputs, options)
            except EmbedServeError:
                if granted.done() and not granted.result():
                    raise OverloadedError() from None  # 429 first, as when admission came first
                raise
            if not await asyncio.shield(granted):
                raise OverloadedError()
            tokenized = time.perf_counter()
            if deadline is not None and time.perf_counter() >= deadline:
                raise DeadlineExceededError("deadline exceeded before the inputs were queued")
            queued = [TokenizedInput(e.input_ids, e.token_type_ids, e.pool_start) for e in encodings]
            for item in queued:
                self._metrics.request_input_length.observe(len(item))
            interactive = self._lanes.is_interactive(limits.priority, sum(map(len, queued)))
            submission = self._queue.submit(
                queued, raw=raw, deadline=deadline, admission=admission, interactive=interactive,
                traceparent=tracing.current_traceparent(), wanted=int(wanted),
            )
            results = await _await_or_abort(self._queue, submission, deadline)
        finally:
            self._queue.release(admission)
        total_s = time.perf_counter() - started
        n = len(results)
        metadata = ResponseMetadata(
            compute_characters=sum(e.characters for e in encodings),
            compute_tokens=sum(len(e.input_ids) for e in encodings),
            total_time_s=total_s,
            tokenization_time_s=tokenized - started,
            queue_time_s=sum(r.queue_time_s for r in results) / n,
            inference_time_s=sum(r.inference_time_s for r in results) / n,
        )
        return InferenceResult(
            [r.values for r in results], [len(e.input_ids) for e in encodings], metadata, interactive,
            [e.input_ids for e in encodings],
        )

    async def _encode(self, inputs: list[Input], options: EncodeOptions) -> list[Encoding]:
        return await _translated(
            self._tokenizer.encode(inputs, options.truncate, options.direction, options.prompt)
        )

    async def tokenize(
        self, inputs: list[str], add_special_tokens: bool, prompt: str | None, token_format: TokenFormat
    ) -> list[bytes]:
        """/tokenize and gRPC Tokenize: each input's tokens, ready to send in `token_format`
        (no permits, as in TEI). Over the character limit → 422 before any worker sees it."""
        return await _translated(self._tokenizer.tokenize(inputs, add_special_tokens, prompt, token_format))

    async def decode(self, id_lists: list[list[int]], skip_special_tokens: bool) -> list[str]:
        return await _translated(self._tokenizer.decode(id_lists, skip_special_tokens))


async def _translated(call: Awaitable[T]) -> T:
    """Await a tokenizer pool call, turning its errors into router errors."""
    try:
        return await call
    except InvalidInputError as exc:
        raise input_validation(exc.message) from exc
    except TokenizerFailedError as exc:
        raise TokenizerError(exc.message) from exc
    except TokenizerUnavailableError as exc:
        raise BackendUnavailableError(exc.message) from exc


async def _await_or_abort(queue: QueueHandle, submission: Submission, deadline: float | None) -> list[EntryResult]:
    """Await every input; on failure, cancellation or deadline, withdraw the rest from the queue."""
    futures = submission.results
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
        # asyncio.wait, not wait_for(gather): a timeout must not cancel the entries,
        # which the queue would then count as disconnects.
        done, pending = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        for future in futures:
            if future in done and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        if pending:
            error = DeadlineExceededError("deadline exceeded: the request's inputs did not run in time")
            for future in pending:
                future.set_exception(error)
            raise error
        return [future.result() for future in futures]
    except BaseException:
        queue.abort(submission)
        for future in futures:
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved: the first error is the one raised
        raise
