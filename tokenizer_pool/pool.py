"""Router-side client of the tokenizer workers.

One pool of workers serves every model of the server: `TokenizerPool` owns the
workers (choice, health, shutdown) and `pool.model(i)` is model i's
`ModelTokenizer` (encode, tokenize, decode), whose calls carry the model's index.

Each call goes to the worker with the fewest calls in flight, of any model, so
one slow request (a huge text) does not hold up others queued behind it on the
same worker. TEI's character guard is applied here, per model, before anything
is sent: an over-long input is refused (or cut) without occupying a worker.

Encode, the per-request hop, goes over each worker's encode link (link.py:
msgpack frames that carry every call of an event-loop iteration at once);
/tokenize, /decode and health use the workers' gRPC service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import grpc
import numpy as np
from google.protobuf.message import Message

from embedserve.proto.codec import pack_u32, unpack_u32
from embedserve.proto.gen_pb import tokenizer_pb2, tokenizer_pb2_grpc
from embedserve.tokenizer_pool.frames import EncodeResult, ErrorKind, FramedText, IdInput, WireInput, encode_socket_path
from embedserve.tokenizer_pool.limits import EncodeError, character_limit, check_characters, guard_text
from embedserve.tokenizer_pool.link import EncodeLink, LinkDown


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
    # Leading tokens mean pooling leaves out (the prompt, include_prompt false).
    pool_start: int = 0


@dataclass(frozen=True)
class TextPair:
    first: str
    second: str


# FramedText: a causal reranker's prompt (router/rerank_template.py), sent as it is.
Input = str | list[int] | TextPair | FramedText
TokenFormat = Literal["json", "tei"]

FORMATS = {"json": tokenizer_pb2.TOKENIZE_FORMAT_JSON, "tei": tokenizer_pb2.TOKENIZE_FORMAT_TEI_PROTO}


class TokenizerPool:
    """The router's handle on the tokenizer workers, shared by every model the server
    serves: each worker tokenizes for all of them. Per-model calls go through
    `model(index)`; worker choice, health and shutdown are the pool's."""

    def __init__(self, socket_paths: list[str], max_input_lengths: Sequence[int]) -> None:
        if not socket_paths:
            raise ValueError("a tokenizer pool needs at least one worker socket")
        if not max_input_lengths:
            raise ValueError("a tokenizer pool needs at least one model")
        # One per model, in the workers' TokenizerConfig.models order.
        self._models = [ModelTokenizer(self, index, length) for index, length in enumerate(max_input_lengths)]
        # A restarted worker is back within a second: reconnect quickly. Answers are
        # not capped: one input's /tokenize result, legal under the character limit,
        # can pass 64 MB of JSON on a long-context model (~60 bytes per token).
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", -1),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        self._channels = [grpc.aio.insecure_channel(f"unix://{path}", options=options) for path in socket_paths]
        self._stubs = [tokenizer_pb2_grpc.TokenizerStub(channel) for channel in self._channels]
        # gRPC calls (tokenize, decode) in flight per worker; encode calls are
        # counted by the worker's encode link.
        self._in_flight = [0] * len(self._stubs)
        self._links = [EncodeLink(encode_socket_path(path)) for path in socket_paths]

    @property
    def size(self) -> int:
        return len(self._stubs)

    def model(self, index: int) -> ModelTokenizer:
        """The calls of the model at `index` (its position in the workers' models)."""
        if not 0 <= index < len(self._models):
            raise IndexError(f"the tokenizer pool serves {len(self._models)} model(s), not model {index}")
        return self._models[index]

    async def _encode_call(
        self, model: int, wire: list[WireInput], truncate: bool, left: bool, prompt: str | None
    ) -> EncodeResult:
        """One worker's answer: the least busy one that can be reached. A call that
        never reached a worker moves on to the next; one lost with its worker is a 503."""
        tried: list[int] = []
        reason = "no worker"
        while True:
            worker = self._least_busy(excluding=tried)
            if worker is None:
                raise TokenizerUnavailableError(f"tokenizer worker unavailable: {reason}")
            try:
                return await self._links[worker].call(wire, truncate, left, prompt, model)
            except LinkDown as exc:
                if exc.sent:
                    raise TokenizerUnavailableError(f"tokenizer worker unavailable: {exc.reason}") from exc
                reason = exc.reason
                tried.append(worker)

    async def _tokenize_call(self, request: tokenizer_pb2.TokenizeRequest) -> list[bytes]:
        with self._grpc_worker() as worker:
            return [result.tokens async for result in self._stubs[worker].Tokenize(request)]

    async def _call(self, method: str, request: Message) -> Message:
        with self._grpc_worker() as worker:
            response: Message = await getattr(self._stubs[worker], method)(request)
        return response

    @contextmanager
    def _grpc_worker(self) -> Iterator[int]:
        """The least busy worker for a gRPC call: counted in flight while the block
        runs, its gRPC errors turned into the pool's."""
        worker = self._any_worker()
        self._in_flight[worker] += 1
        try:
            yield worker
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        finally:
            self._in_flight[worker] -= 1

    def in_flight(self, worker: int) -> int:
        """Calls the router has sent to `worker` and not yet had answered, all models'."""
        return self._in_flight[worker] + self._links[worker].in_flight

    def _least_busy(self, excluding: list[int] | None = None) -> int | None:
        """Fewest calls in flight (of every model: one model's backlog sends the
        others' calls to the less busy workers), workers whose last connect failed last."""
        candidates = [i for i in range(len(self._stubs)) if not excluding or i not in excluding]
        if not candidates:
            return None
        return min(candidates, key=lambda i: (self._links[i].down, self.in_flight(i)))

    def _any_worker(self) -> int:
        worker = self._least_busy()
        assert worker is not None  # a pool has at least one worker
        return worker

    async def health(self, timeout_s: float = 2.0) -> bool:
        try:
            await asyncio.gather(
                *(stub.Health(tokenizer_pb2.HealthRequest(), timeout=timeout_s) for stub in self._stubs)
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    async def close(self) -> None:
        for link in self._links:
            link.close()
        await asyncio.gather(*(channel.close() for channel in self._channels))


class ModelTokenizer:
    """One model's tokenizer calls, sent to the pool's shared workers with the
    model's index. TEI's character guard is the model's: it is applied here."""

    def __init__(self, pool: TokenizerPool, index: int, max_input_length: int) -> None:
        self._pool = pool
        self.index = index
        self.max_input_length = max_input_length
        self.character_limit = character_limit(max_input_length)

    async def encode(
        self,
        inputs: list[Input],
        truncate: bool,
        direction: Literal["right", "left"],
        prompt: str | None,
    ) -> list[Encoding]:
        wire = [_wire_input(self._bounded(item, truncate, prompt)) for item in inputs]
        result = await self._pool._encode_call(self.index, wire, truncate, direction == "left", prompt)
        if result.error_kind == ErrorKind.INVALID_INPUT:
            raise InvalidInputError(result.error)
        if result.error_kind != ErrorKind.NONE:
            raise TokenizerFailedError(result.error)
        return _encodings(result, len(inputs))

    async def tokenize(
        self, inputs: list[str], add_special_tokens: bool, prompt: str | None, token_format: TokenFormat
    ) -> list[bytes]:
        """Each input's tokens, written by the worker in `token_format`: a JSON array
        of TEI's token objects, or a serialized tei.v1.EncodeResponse.

        The worker answers one message per input, so the router's loop never
        handles more than one input's tokens at a time.
        """
        for item in inputs:
            # /tokenize never truncates: over the limit is always a refusal.
            self._check(len(prompt or "") + len(item))
        request = tokenizer_pb2.TokenizeRequest(
            inputs=inputs, add_special_tokens=add_special_tokens, prompt=prompt, format=FORMATS[token_format],
            model=self.index,
        )
        results = await self._pool._tokenize_call(request)
        if len(results) != len(inputs):
            raise TokenizerFailedError(
                f"tokenizer worker returned {len(results)} results for {len(inputs)} inputs. This is a bug."
            )
        return results

    async def decode(self, id_lists: list[list[int]], skip_special_tokens: bool) -> list[str]:
        request = tokenizer_pb2.DecodeRequest(
            ids=[pack_u32(ids) for ids in id_lists], skip_special_tokens=skip_special_tokens, model=self.index
        )
        response: tokenizer_pb2.DecodeResponse = await self._pool._call("Decode", request)
        return list(response.texts)

    def _bounded(self, item: Input, truncate: bool, prompt: str | None) -> Input:
        """TEI's character guard on one input: refused, cut, or as it was.

        Ids are left to the worker, which guards the text they decode to.
        """
        if isinstance(item, TextPair):
            half = self.character_limit // 2  # each side of a pair gets half, as in TEI
            if not truncate:
                self._check(len(item.first), half)
                self._check(len(item.second), half)
            return TextPair(guard_text(item.first, True, half), guard_text(item.second, True, half))
        if isinstance(item, str):
            if not truncate:
                self._check(len(prompt or "") + len(item))
            # Cutting the text alone is enough for the worker to make the exact cut
            # of prompt + text.
            return guard_text(item, True, self.character_limit)
        if isinstance(item, FramedText):
            if not truncate:
                self._check(len(item.prefix) + len(item.body) + len(item.suffix))
            # Only the body is ever cut; the frame is the template's, a few hundred characters.
            budget = max(self.character_limit - len(item.prefix) - len(item.suffix), 0)
            body = guard_text(item.body, True, budget)
            return item if body is item.body else FramedText(item.prefix, body, item.suffix)
        return item

    def _check(self, characters: int, limit: int | None = None) -> None:
        try:
            check_characters(characters, self.character_limit if limit is None else limit)
        except EncodeError as exc:
            raise InvalidInputError(str(exc)) from exc


def _wire_input(item: Input) -> WireInput:
    if isinstance(item, (str, FramedText)):
        return item
    if isinstance(item, TextPair):
        return (item.first, item.second)
    return IdInput(pack_u32(item))


def _encodings(result: EncodeResult, expected: int) -> list[Encoding]:
    """Views into the answer's packed buffers, one Encoding per input."""
    lengths, characters = result.lengths, result.characters
    try:
        ids = unpack_u32(result.ids)
        type_ids = np.zeros(len(ids), dtype=np.uint32) if result.type_ids is None else unpack_u32(result.type_ids)
    except ValueError as exc:
        raise TokenizerFailedError(f"tokenizer worker sent a bad encoding: {exc}. This is a bug.") from exc
    if not len(lengths) == len(characters) == expected or sum(lengths) != len(ids) or len(type_ids) != len(ids):
        raise TokenizerFailedError(
            f"tokenizer worker returned {len(lengths)} encodings for {expected} inputs. This is a bug."
        )
    encodings = []
    start = 0
    for length, chars in zip(lengths, characters):
        stop = start + length
        encodings.append(Encoding(ids[start:stop], type_ids[start:stop], chars, result.pool_start))
        start = stop
    return encodings


def _translate(exc: grpc.aio.AioRpcError) -> TokenizationError:
    details = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInputError(details)
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return TokenizerFailedError(details)
    return TokenizerUnavailableError(f"tokenizer worker unavailable: {details}")
