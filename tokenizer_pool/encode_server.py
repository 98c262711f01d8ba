"""Worker side of the encode link (tokenizer_pool/frames.py).

Every frame that arrives while the tokenizer thread is busy waits, and the next
thread job takes all of them: one hand-off to the thread per job, however many
requests it holds, and arrival order is kept. Answers come back in frames too. Each call's failure
is its own answer, so one bad input never fails the other calls of its frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial

import msgspec

from embedserve.proto.codec import unpack_u32
from embedserve.proto.frames import FrameProtocol
from embedserve.tokenizer_pool.encoder import (
    EncodeError, Encoder, EncoderInput, TextPair, UnknownModelError, encoder_for,
)
from embedserve.tokenizer_pool.frames import EncodeCall, EncodeResult, ErrorKind, FramedText, IdInput, WireInput

logger = logging.getLogger("tokenizer_pool")

# Tokenizing time after which the answers so far leave without waiting for the
# rest of the job: a few bench requests' worth, so a hand-off back to the loop
# serves several calls while no answer waits much longer than its own work.
ANSWER_EVERY_S = 0.004


@dataclass
class _Job:
    connection: _Connection
    calls: list[EncodeCall]


@dataclass
class EncodeService:
    """Runs the encode calls of all connections on the worker's one tokenizer thread."""

    # One per model, in TokenizerConfig.models order; a call names its model's index.
    encoders: Sequence[Encoder]
    thread: Executor
    _waiting: list[_Job] = field(default_factory=list)
    _running: bool = False
    _decoder: msgspec.msgpack.Decoder[list[EncodeCall]] = field(
        default_factory=lambda: msgspec.msgpack.Decoder(list[EncodeCall])
    )
    _encoder: msgspec.msgpack.Encoder = field(default_factory=msgspec.msgpack.Encoder)

    def received(self, connection: _Connection, payload: bytes) -> None:
        self._waiting.append(_Job(connection, self._decoder.decode(payload)))
        if not self._running:
            self._start()

    def _start(self) -> None:
        jobs, self._waiting = self._waiting, []
        self._running = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.thread, self._run, jobs, loop)
        future.add_done_callback(partial(self._finished, jobs))

    def _finished(self, jobs: list[_Job], future: asyncio.Future[list[tuple[_Connection, bytes]]]) -> None:
        self._running = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            # A bug (answers are built per call, errors included); dropping the
            # connections fails their calls (503) instead of leaving them waiting.
            logger.error("encode job failed: %r", error)
            for job in jobs:
                job.connection.abort()
        else:
            _send(future.result())
        if self._waiting:
            self._start()

    def _run(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> list[tuple[_Connection, bytes]]:
        """On the tokenizer thread: every call of `jobs`. Answers leave in frames, one
        per connection, whenever ANSWER_EVERY_S of work has piled up (and at the end),
        so a big batch of calls does not hold back the answers to its first ones."""
        answers: dict[_Connection, list[EncodeResult]] = {}
        since = time.perf_counter()
        for job in jobs:
            if job.connection.closed:
                continue
            done = answers.setdefault(job.connection, [])
            for call in job.calls:
                done.append(self._answer(call))
                if time.perf_counter() - since >= ANSWER_EVERY_S:
                    loop.call_soon_threadsafe(_send, self._payloads(answers))
                    answers = {job.connection: (done := [])}
                    since = time.perf_counter()
        return self._payloads(answers)

    def _payloads(self, answers: dict[_Connection, list[EncodeResult]]) -> list[tuple[_Connection, bytes]]:
        return [(connection, self._encoder.encode(results)) for connection, results in answers.items() if results]

    def _answer(self, call: EncodeCall) -> EncodeResult:
        try:
            encoder = encoder_for(self.encoders, call.model)
            inputs = [_encoder_input(item) for item in call.inputs]
            packed = encoder.encode_packed(inputs, call.truncate, "left" if call.truncate_left else "right", call.prompt)
        except EncodeError as exc:
            return EncodeResult(call.id, error_kind=ErrorKind.INVALID_INPUT, error=str(exc))
        except UnknownModelError as exc:
            logger.error("%s", exc)
            return EncodeResult(call.id, error_kind=ErrorKind.TOKENIZER_FAILED, error=str(exc))
        except Exception as exc:  # tokenizers raises plain Exceptions on odd input
            logger.exception("tokenizer failed")
            return EncodeResult(call.id, error_kind=ErrorKind.TOKENIZER_FAILED, error=f"tokenizer error {exc}")
        return EncodeResult(
            call.id, packed.ids, packed.lengths, packed.type_ids, packed.characters, packed.pool_start
        )


def _send(payloads: list[tuple[_Connection, bytes]]) -> None:
    for connection, payload in payloads:
        connection.send_frame(payload)


def _encoder_input(item: WireInput) -> EncoderInput:
    if isinstance(item, (str, FramedText)):
        return item
    if isinstance(item, IdInput):
        return unpack_u32(item.packed)
    return TextPair(item[0], item[1])


class _Connection(FrameProtocol):
    """One router process's link to this worker."""

    def __init__(self, service: EncodeService) -> None:
        super().__init__()
        self._service = service

    def frame_received(self, payload: bytes) -> None:
        self._service.received(self, payload)

    def garbled(self, exc: Exception) -> None:
        # Only a router bug gets here; its calls fail on the lost connection.
        logger.error("dropping an encode link that sent a bad frame: %s", exc)


async def start_encode_server(service: EncodeService, path: str) -> asyncio.Server:
    """Listen on `path` (a stale file there is replaced); the caller closes the server
    and removes the file."""
    if os.path.lexists(path):
        os.unlink(path)
    return await asyncio.get_running_loop().create_unix_server(lambda: _Connection(service), path)
