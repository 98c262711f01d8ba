"""gRPC servicer of `proto/backend.proto` around one engine.

The grpc.aio loop is the I/O side; forward passes run on one dedicated worker
thread, so Health answers while a batch runs and batches never overlap. That thread
runs interactive batches (`Batch.interactive`) before bulk ones and between the
slices of a running bulk batch (backends/scheduler.py, backends/batch_job.py). An engine
that can launch a batch ahead (CUDA, backends/pipeline.py) only queues it there; a
second thread waits for its results, so the next batch is launched meanwhile. Each answer
carries the CPU seconds the model threads spent (backends/model_cpu.py), so the
router can tell the model's CPU from the serving overhead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import grpc
import numpy as np

from embedserve.backends.base import Backend, CausalRerankSpec, EmbedOutput, ModelBatch
from embedserve.backends.batch_job import BatchJob, Join
from embedserve.backends.model_cpu import MODEL_THREAD_NAME, ModelCpuClock, set_thread_name
from embedserve.backends.pipeline import Pending, ready
from embedserve.backends.scheduler import ForwardScheduler, SliceSizer
from embedserve.backends.slicing import join_embed, join_predict
from embedserve.proto import tracing
from embedserve.proto.codec import pack_tensor, unpack_u32
from embedserve.proto.gen_pb import backend_pb2, backend_pb2_grpc

logger = logging.getLogger(__name__)

R = TypeVar("R")

# Large models return [batch, 4096] float32 rows: raise gRPC's 4 MB default.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# How long one bulk slice should run on CPU: what a query arriving mid-batch waits for
# at most. ~25 ms slices cost no measurable bulk throughput there (each still runs
# hundreds of tokens).
# On a GPU bulk batches run whole: 8 ms slices (down to 1,024 tokens) held one H100's
# served throughput to a quarter, the backend's one core busy launching small forwards
# (bench/GPU_NOTES.md, 2026-11-27: bulk 441K against 1.73M tokens/s whole, mixed 212K
# against 656K). A query still runs before every queued bulk batch, after at most the
# one on the device (~35 ms for 65,536 tokens of BERT-base).
SLICE_TARGET_S = 0.025
# Slice size before the first measurement: small enough that a slow model's first
# slice does not run long, big enough that a fast one measures something.
INITIAL_SLICE_TOKENS = 256
# Never smaller: each forward call has a fixed cost (intra-op threads waking, per-op
# dispatch), ~10 ms for a 12-token MiniLM call on two contended cores. Slices sized from
# throughput alone shrink when the machine is busy until that cost is most of each
# slice (measured: bulk down to a quarter); past this floor a slice runs longer instead.
MIN_SLICE_TOKENS = 256


@runtime_checkable
class LaunchesAhead(Protocol):
    """An engine whose embed batches can be queued on the device and finished later."""

    @property
    def pipelined(self) -> bool: ...

    def launch_embed(self, batch: ModelBatch) -> Pending[EmbedOutput]: ...


class BatchRejected(ValueError):
    """The batch breaks the contract (malformed, or over the token budget)."""


def decode_batch(request: backend_pb2.Batch, padded: bool, max_batch_tokens: int, max_batch_size: int | None) -> ModelBatch:
    try:
        input_ids = unpack_u32(request.input_ids)
        token_type_ids = unpack_u32(request.token_type_ids)
        position_ids = unpack_u32(request.position_ids)
        cu = unpack_u32(request.cu_seq_lengths)
    except ValueError as exc:
        raise BatchRejected(str(exc)) from exc
    if len(cu) < 2 or cu[0] != 0 or cu[-1] != len(input_ids):
        raise BatchRejected("cu_seq_lengths must start at 0 and end at the number of tokens")
    lengths = np.diff(cu.astype(np.int64))
    if (lengths <= 0).any():
        raise BatchRejected("every sequence needs at least one token")
    if len(token_type_ids) != len(input_ids) or len(position_ids) != len(input_ids):
        raise BatchRejected("input_ids, token_type_ids and position_ids differ in length")
    if request.max_length != int(lengths.max()):
        raise BatchRejected(f"max_length {request.max_length} is not the longest sequence ({lengths.max()})")
    raw_indices = frozenset(int(i) for i in request.raw_indices)
    if any(i >= len(cu) - 1 for i in raw_indices):
        raise BatchRejected("raw_indices names a sequence outside the batch")
    pool_starts = None
    if request.pool_starts:
        try:
            pool_starts = unpack_u32(request.pool_starts)
        except ValueError as exc:
            raise BatchRejected(str(exc)) from exc
        if len(pool_starts) != len(cu) - 1:
            raise BatchRejected("pool_starts needs one value per sequence")
    sparse_indices = frozenset(int(i) for i in request.sparse_indices)
    colbert_indices = frozenset(int(i) for i in request.colbert_indices)
    if any(i >= len(cu) - 1 for i in sparse_indices | colbert_indices):
        raise BatchRejected("sparse_indices or colbert_indices names a sequence outside the batch")
    if (sparse_indices | colbert_indices) & raw_indices:
        raise BatchRejected("a raw sequence cannot also ask for bge-m3 outputs")
    batch = ModelBatch(input_ids, token_type_ids, position_ids, cu, int(request.max_length), raw_indices, pool_starts,
                       sparse_indices, colbert_indices)
    if max_batch_size is not None and batch.size > max_batch_size:
        raise BatchRejected(f"batch of {batch.size} sequences exceeds this backend's limit of {max_batch_size}")
    if batch.cost(padded) > max_batch_tokens:
        raise BatchRejected(f"batch costs {batch.cost(padded)} tokens, over max_batch_tokens {max_batch_tokens}")
    return batch


class BackendServicer(backend_pb2_grpc.BackendServicer):
    def __init__(
        self, backend: Backend, max_batch_tokens: int, slicing: bool = True, rerank: CausalRerankSpec | None = None
    ) -> None:
        self._backend = backend
        self._max_batch_tokens = max_batch_tokens
        # Reported in Info: the router frames a causal reranker's pairs with it.
        self._rerank = rerank
        # Before the forward thread starts: the clock's first scan must not see it
        # unnamed (a thread it files as not the model's stays so).
        self._model_cpu = ModelCpuClock()
        # slicing=False runs bulk batches whole (a baseline for measurements), as a GPU always does.
        sliced = slicing and not backend.device.startswith("cuda")
        sizer = SliceSizer(SLICE_TARGET_S if sliced else None, INITIAL_SLICE_TOKENS, MIN_SLICE_TOKENS)
        # Named, so the model's CPU (this thread and the intra-op workers it starts) is told apart.
        self._forward = ForwardScheduler(sizer, initializer=partial(set_thread_name, MODEL_THREAD_NAME))
        self._launch_embed: Callable[[ModelBatch], Pending[EmbedOutput]] | None = None
        self._copy_out: ThreadPoolExecutor | None = None
        if isinstance(backend, LaunchesAhead) and backend.pipelined:
            self._launch_embed = backend.launch_embed
            # Waits for results on the device: the model's time, so named like the forward thread.
            self._copy_out = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-out",
                                                initializer=set_thread_name, initargs=(MODEL_THREAD_NAME,))
        self._batches_run = 0
        self._sequences_run = 0
        self._max_batch_tokens_seen = 0

    def close(self) -> None:
        self._forward.close()
        if self._copy_out is not None:
            self._copy_out.shutdown(wait=True, cancel_futures=True)
        self._model_cpu.close()

    async def Info(self, request: backend_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> backend_pb2.InfoResponse:
        backend = self._backend
        return backend_pb2.InfoResponse(
            is_padded=backend.is_padded,
            max_batch_size=backend.max_batch_size or 0,
            max_batch_tokens=self._max_batch_tokens,
            hidden_size=backend.hidden_size,
            dtype=backend.dtype,
            device=backend.device,
            backend=backend.name,
            pooling=backend.pooling,
            reranker_template=self._rerank.template if self._rerank else "",
            reranker_instruction=self._rerank.instruction if self._rerank else "",
            sparse_head=backend.sparse_head,
            colbert_dim=backend.colbert_dim,
        )

    async def Health(self, request: backend_pb2.HealthRequest, context: grpc.aio.ServicerContext) -> backend_pb2.HealthResponse:
        return backend_pb2.HealthResponse(
            batches_run=self._batches_run,
            sequences_run=self._sequences_run,
            max_batch_tokens_seen=self._max_batch_tokens_seen,
        )

    async def Embed(self, request: backend_pb2.Batch, context: grpc.aio.ServicerContext) -> backend_pb2.EmbedResponse:
        launch = self._launch_embed or _launched(self._backend.embed)
        output, cost, model_cpu_s = await self._run(request, context, launch, join_embed)
        return backend_pb2.EmbedResponse(
            embeddings=pack_tensor(output.pooled), token_embeddings=pack_tensor(output.token_rows), batch_tokens=cost,
            model_cpu_seconds=model_cpu_s, sparse_weights=pack_tensor(output.sparse_weights),
            colbert_vectors=pack_tensor(output.colbert_rows),
        )

    async def Predict(self, request: backend_pb2.Batch, context: grpc.aio.ServicerContext) -> backend_pb2.PredictResponse:
        values, cost, model_cpu_s = await self._run(request, context, _launched(self._backend.predict), join_predict)
        return backend_pb2.PredictResponse(scores=pack_tensor(values), batch_tokens=cost, model_cpu_seconds=model_cpu_s)

    async def _run(
        self,
        request: backend_pb2.Batch,
        context: grpc.aio.ServicerContext,
        launch: Callable[[ModelBatch], Pending[R]],
        join: Join[R],
    ) -> tuple[R, int, float]:
        backend = self._backend
        try:
            batch = decode_batch(request, backend.is_padded, self._max_batch_tokens, backend.max_batch_size)
        except BatchRejected as exc:
            logger.error("rejected batch: %s", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        cost = batch.cost(backend.is_padded)
        self._batches_run += 1
        self._sequences_run += batch.size
        self._max_batch_tokens_seen = max(self._max_batch_tokens_seen, cost)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        job = BatchJob(batch, launch, join, backend.is_padded, self._model_cpu.take)
        # The router's batch span, continued here when the batch carries one (proto/tracing).
        span = tracing.joined("forward", request.traceparent,
                              {"batch_size": batch.size, "batch_tokens": cost, "interactive": request.interactive})
        with span:
            try:
                pending, model_cpu_s = await asyncio.wrap_future(self._forward.submit(job, request.interactive))
                # The forward thread is free for the next batch while this one's results come back.
                values = pending.result() if pending.done or self._copy_out is None else \
                    await loop.run_in_executor(self._copy_out, pending.result)
            except ValueError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except Exception as exc:  # a forward failure must reach the router, not kill the process
                logger.exception("forward pass failed on a batch of %d sequences", batch.size)
                await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        logger.debug("%s batch of %d sequences, %d tokens in %d slices, %.1f ms",
                     "interactive" if request.interactive else "bulk", batch.size, cost, job.slices,
                     (time.perf_counter() - started) * 1e3)
        return values, cost, model_cpu_s


def _launched(forward: Callable[[ModelBatch], R]) -> Callable[[ModelBatch], Pending[R]]:
    """A forward that finishes before it returns, in the launch shape."""
    return lambda batch: ready(forward(batch))
