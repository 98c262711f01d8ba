"""Router-side client of the tokenizer workers.

Each call goes to the worker with the fewest calls in flight, so one slow request
(a huge text) does not hold up others queued behind it on the same worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import grpc
import numpy as np

from proto.codec import pack_u32, unpack_u32
from proto.gen_pb import tokenizer_pb2, tokenizer_pb2_grpc


class TokenizationError(Exception):
    """Base of the pool's errors; `message` is the text the client sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(TokenizationError):
    """The input breaks a limit (length, characters, ids): a 422 Validation."""


class TokenizerFailedError(TokenizationError):
    """The tokenizer itself failed on the input: a 422 Tokenizer."""


class TokenizerUnavailableError(TokenizationError):
    """No worker answered."""


@dataclass(frozen=True)
class Encoding:
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    characters: int


Input = str | list[int]


class TokenizerPool:
    def __init__(self, socket_paths: list[str]) -> None:
        if not socket_paths:
            raise ValueError("a tokenizer pool needs at least one worker socket")
        self._channels = [grpc.aio.insecure_channel(f"unix://{path}") for path in socket_paths]
        self._stubs = [tokenizer_pb2_grpc.TokenizerStub(channel) for channel in self._channels]
        self._in_flight = [0] * len(self._stubs)

    @property
    def size(self) -> int:
        return len(self._stubs)

    async def encode(
        self,
        inputs: list[Input],
        truncate: bool,
        direction: Literal["right", "left"],
        prompt: str | None,
    ) -> list[Encoding]:
        request = tokenizer_pb2.EncodeRequest(
            inputs=[
                tokenizer_pb2.EncodeInput(text=item)
                if isinstance(item, str)
                else tokenizer_pb2.EncodeInput(ids=pack_u32(item))
                for item in inputs
            ],
            truncate=truncate,
            truncation_direction=(
                tokenizer_pb2.TRUNCATION_DIRECTION_LEFT if direction == "left" else tokenizer_pb2.TRUNCATION_DIRECTION_RIGHT
            ),
            prompt=prompt,
        )
        worker = min(range(len(self._stubs)), key=self._in_flight.__getitem__)
        self._in_flight[worker] += 1
        try:
            response = await self._stubs[worker].Encode(request)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        finally:
            self._in_flight[worker] -= 1
        if len(response.encodings) != len(inputs):
            raise TokenizerFailedError(
                f"tokenizer worker returned {len(response.encodings)} encodings for {len(inputs)} inputs. This is a bug."
            )
        return [
            Encoding(unpack_u32(e.input_ids), unpack_u32(e.token_type_ids), e.characters) for e in response.encodings
        ]

    async def health(self, timeout_s: float = 2.0) -> bool:
        try:
            await asyncio.gather(
                *(stub.Health(tokenizer_pb2.HealthRequest(), timeout=timeout_s) for stub in self._stubs)
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))


def _translate(exc: grpc.aio.AioRpcError) -> TokenizationError:
    details = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInputError(details)
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return TokenizerFailedError(details)
    return TokenizerUnavailableError(f"tokenizer worker unavailable: {details}")
