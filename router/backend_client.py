"""Router-side client of one backend process, over gRPC on its Unix socket.

gRPC failures are translated here, at the boundary, into router errors: the
router never sees an `AioRpcError`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
import numpy as np

from embedserve.proto.codec import unpack_tensor
from embedserve.proto.gen_pb import backend_pb2, backend_pb2_grpc
from embedserve.router.errors import BackendDownError, BackendError

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
# A restarted backend is back within a second or two: reconnect quickly instead
# of gRPC's default backoff (up to two minutes).
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
RECOVERY_POLL_S = 0.25


@dataclass(frozen=True)
class BatchOutput:
    pooled: np.ndarray  # one row per non-raw sequence, batch order
    token_rows: np.ndarray  # the raw sequences' token vectors, concatenated in batch order
    batch_tokens: int  # the batch's cost under the backend's accounting
    model_cpu_s: float = 0.0  # CPU the backend's model threads spent for it (backends/model_cpu.py)
    # bge-m3 (router/multi_output.py): per-token lexical weights of the sequences that
    # asked, concatenated in batch order; their [tokens - 1, colbert_dim] multi-vectors.
    sparse_weights: np.ndarray | None = None
    colbert_rows: np.ndarray | None = None


class BackendClient:
    def __init__(self, socket_path: str, name: str) -> None:
        self.name = name
        self.socket_path = socket_path
        self._channel = grpc.aio.insecure_channel(f"unix://{socket_path}", options=CHANNEL_OPTIONS)
        self._stub = backend_pb2_grpc.BackendStub(self._channel)
        self._up = asyncio.Event()
        self._up.set()
        self._recovery: asyncio.Task[None] | None = None

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    async def wait_until_up(self) -> None:
        await self._up.wait()

    def mark_down(self) -> None:
        """Stop sending batches here until a Health call succeeds again."""
        if not self._up.is_set():
            return
        self._up.clear()
        self._recovery = asyncio.create_task(self._recover(), name=f"recover-{self.name}")

    async def _recover(self) -> None:
        while not await self.health(timeout_s=1.0):
            await asyncio.sleep(RECOVERY_POLL_S)
        logger.info("%s is back", self.name)
        self._up.set()

    async def info(self, timeout_s: float = 10.0) -> backend_pb2.InfoResponse:
        try:
            response: backend_pb2.InfoResponse = await self._stub.Info(backend_pb2.InfoRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.name) from exc
        return response

    async def health(self, timeout_s: float = 2.0) -> bool:
        try:
            await self._stub.Health(backend_pb2.HealthRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def embed(self, batch: backend_pb2.Batch) -> BatchOutput:
        try:
            response: backend_pb2.EmbedResponse = await self._stub.Embed(batch)
            return BatchOutput(
                unpack_tensor(response.embeddings), unpack_tensor(response.token_embeddings), response.batch_tokens,
                response.model_cpu_seconds, _unpack_optional(response.sparse_weights),
                _unpack_optional(response.colbert_vectors),
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.name) from exc
        except ValueError as exc:
            raise BackendError(f"Backend error: malformed response from {self.name}: {exc}") from exc

    async def predict(self, batch: backend_pb2.Batch) -> BatchOutput:
        try:
            response: backend_pb2.PredictResponse = await self._stub.Predict(batch)
            scores = unpack_tensor(response.scores)
            return BatchOutput(scores, np.empty((0, 0), np.float32), response.batch_tokens, response.model_cpu_seconds)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.name) from exc
        except ValueError as exc:
            raise BackendError(f"Backend error: malformed response from {self.name}: {exc}") from exc

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        await self._channel.close()


def _unpack_optional(tensor: backend_pb2.Tensor) -> np.ndarray | None:
    """A tensor the backend may leave unset (no shape at all) when nothing asked for it."""
    return unpack_tensor(tensor) if tensor.shape else None


def _translate(exc: grpc.aio.AioRpcError, name: str) -> BackendError:
    details = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        # The requests of a batch on a dead backend fail with 424, as TEI fails
        # a batch whose backend errored.
        return BackendDownError(f"Backend error: {name} unavailable: {details}")
    return BackendError(f"Backend error: Inference error: {details}")
