"""Router-side client of one backend process, over gRPC on its Unix socket.

gRPC failures are translated here, at the boundary, into router errors: the
router never sees an `AioRpcError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from proto.codec import unpack_tensor
from proto.gen_pb import backend_pb2, backend_pb2_grpc
from router.errors import BackendError

MAX_MESSAGE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class BatchOutput:
    pooled: np.ndarray  # one row per non-raw sequence, batch order
    token_rows: np.ndarray  # the raw sequences' token vectors, concatenated in batch order
    batch_tokens: int  # the batch's cost under the backend's accounting


class BackendClient:
    def __init__(self, socket_path: str, name: str) -> None:
        self.name = name
        self.socket_path = socket_path
        self._channel = grpc.aio.insecure_channel(
            f"unix://{socket_path}",
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = backend_pb2_grpc.BackendStub(self._channel)

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
                unpack_tensor(response.embeddings), unpack_tensor(response.token_embeddings), response.batch_tokens
            )
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.name) from exc
        except ValueError as exc:
            raise BackendError(f"Backend error: malformed response from {self.name}: {exc}") from exc

    async def predict(self, batch: backend_pb2.Batch) -> BatchOutput:
        try:
            response: backend_pb2.PredictResponse = await self._stub.Predict(batch)
            scores = unpack_tensor(response.scores)
            return BatchOutput(scores, np.empty((0, 0), np.float32), response.batch_tokens)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, self.name) from exc
        except ValueError as exc:
            raise BackendError(f"Backend error: malformed response from {self.name}: {exc}") from exc

    async def close(self) -> None:
        await self._channel.close()


def _translate(exc: grpc.aio.AioRpcError, name: str) -> BackendError:
    details = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        # The requests of a batch on a dead backend fail with 424, as TEI fails
        # a batch whose backend errored.
        return BackendError(f"Backend error: {name} unavailable: {details}")
    return BackendError(f"Backend error: Inference error: {details}")
