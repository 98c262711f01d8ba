"""Router side of the encode link (tokenizer_pool/frames.py): one Unix stream per
worker, connected on first use and again after the worker restarts.

Calls made during one event-loop iteration leave as one frame: `call` queues the
call and the first call of an iteration schedules the send with `call_soon`,
which runs after every callback already queued for this iteration.
"""

from __future__ import annotations

import asyncio
import errno
import logging

import msgspec

from embedserve.proto.frames import FrameProtocol
from embedserve.tokenizer_pool.frames import EncodeCall, EncodeResult, WireInput

logger = logging.getLogger("tokenizer_pool")

# How long a worker that refused a connection is tried last (the launcher
# restarts a crashed worker within about a second).
RETRY_AFTER_S = 0.5


class LinkDown(Exception):
    """The worker cannot be reached; `sent` tells whether the call may have reached it."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class EncodeLink:
    def __init__(self, path: str) -> None:
        self.path = path
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        # A failed connect: the pool tries the other workers first, for a while.
        self.down = False
        # Calls waiting for the connection count as in flight, so a burst spreads
        # over the workers while one link connects.
        self._connect_waiters = 0
        self._pending: dict[int, asyncio.Future[EncodeResult]] = {}
        self._outbox: list[EncodeCall] = []
        self._next_id = 0
        self._encoder = msgspec.msgpack.Encoder()

    @property
    def in_flight(self) -> int:
        return len(self._pending) + self._connect_waiters

    async def call(
        self, inputs: list[WireInput], truncate: bool, truncate_left: bool, prompt: str | None, model: int = 0
    ) -> EncodeResult:
        """The worker's answer for `model` (its index in the worker's models); raises
        LinkDown when the worker is unreachable or dies first."""
        if self._protocol is None:
            self._connect_waiters += 1
            try:
                await self._connect()
            finally:
                self._connect_waiters -= 1
        loop = asyncio.get_running_loop()
        self._next_id += 1
        call_id = self._next_id
        answer: asyncio.Future[EncodeResult] = loop.create_future()
        self._pending[call_id] = answer
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append(EncodeCall(call_id, inputs, truncate, truncate_left, prompt, model))
        try:
            return await answer
        finally:
            # A cancelled call's answer, if it still comes, finds no one waiting.
            self._pending.pop(call_id, None)

    def _flush(self) -> None:
        calls, self._outbox = self._outbox, []
        # Calls cancelled (or failed with a lost connection) before the send are dropped.
        calls = [call for call in calls if self._waiting(call.id)]
        if not calls:
            return
        if self._protocol is None:
            self._fail([call.id for call in calls], LinkDown("tokenizer worker connection lost", sent=False))
            return
        try:
            self._protocol.send_frame(self._encoder.encode(calls))
        except Exception as exc:  # a bug, but the calls must not wait forever
            logger.exception("cannot send an encode frame")
            self._fail([call.id for call in calls], LinkDown(f"cannot send to the tokenizer worker: {exc}", sent=False))

    def _waiting(self, call_id: int) -> bool:
        answer = self._pending.get(call_id)
        return answer is not None and not answer.done()

    async def _connect(self) -> _Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            # Retrieved here too: a connect whose callers were all cancelled must
            # not log "exception never retrieved".
            self._connecting.add_done_callback(lambda done: done.cancelled() or done.exception())
        # shield: one caller's cancellation must not abort the others' connect.
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), self.path)
        except OSError as exc:
            self.down = True
            loop.call_later(RETRY_AFTER_S, self._retry)
            reason = "no socket" if exc.errno == errno.ENOENT else exc.strerror or type(exc).__name__
            raise LinkDown(f"failed to connect to {self.path}: {reason}", sent=False) from exc
        self.down = False
        self._protocol = protocol
        return protocol

    def _retry(self) -> None:
        # A restarted worker gets its share again; until then a failed connect is
        # only a quick refusal that moves the call on.
        self.down = False

    def _answered(self, results: list[EncodeResult]) -> None:
        for result in results:
            answer = self._pending.get(result.id)
            if answer is not None and not answer.done():
                answer.set_result(result)

    def _lost(self, protocol: _Protocol, reason: str) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        message = f"tokenizer worker connection lost: {reason}"
        unsent = {call.id for call in self._outbox}
        self._fail([i for i in self._pending if i in unsent], LinkDown(message, sent=False))
        # The others were sent: the worker may have been running them when it died.
        self._fail([i for i in self._pending if i not in unsent], LinkDown(message, sent=True))

    def _fail(self, call_ids: list[int], error: LinkDown) -> None:
        for call_id in call_ids:
            answer = self._pending.get(call_id)
            if answer is not None and not answer.done():
                answer.set_exception(error)

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.abort()


class _Protocol(FrameProtocol):
    def __init__(self, link: EncodeLink) -> None:
        super().__init__()
        self._link = link
        self._decoder = msgspec.msgpack.Decoder(list[EncodeResult])

    def frame_received(self, payload: bytes) -> None:
        self._link._answered(self._decoder.decode(payload))

    def garbled(self, exc: Exception) -> None:
        logger.error("tokenizer worker sent a bad encode frame: %s", exc)
        self._link._lost(self, f"bad frame ({exc})")

    def frame_link_lost(self, exc: Exception | None) -> None:
        self._link._lost(self, str(exc) if exc else "closed by the worker")
