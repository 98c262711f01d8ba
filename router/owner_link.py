"""The front ↔ queue owner link: msgspec messages in length-prefixed frames
(proto/frames.py) on one Unix stream socket per front (issue 12).

A frame's payload is a msgpack array of messages. Each
side queues what it produces during one event-loop iteration and writes it as
one frame at the end of the iteration (`FramedLink.send`), so a busy server
makes one write per iteration, not one per request; vLLM's engine-core client
batches the same way. Arrays cross as packed buffers (u32 ids, float32 rows).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Union

import msgspec

from embedserve.proto.frames import LENGTH, MAX_FRAME_BYTES, FrameProtocol, frame

logger = logging.getLogger(__name__)


class _Msg(msgspec.Struct, array_like=True, tag=True, omit_defaults=True):
    pass


# ---- front → owner


class Hello(_Msg, tag="hello"):
    """First message of a front; answered by Welcome."""

    front_index: int
    pid: int


class Ready(_Msg, tag="ready"):
    """The front serves (its lifespan is done): the launcher's probe counts it."""


class Probe(_Msg, tag="probe"):
    """The launcher's readiness question, on a connection of its own."""


class Admit(_Msg, tag="admit"):
    """Ask for `count` permits for call `id`; wait FIFO or be refused at once."""

    id: int
    count: int
    wait: bool
    # Which served model's permits (RouterConfig.models order).
    model: int = 0


class Submit(_Msg, tag="submit"):
    """Call `id`'s tokenized inputs, packed: u32 ids and type ids concatenated,
    u32 lengths, u32 pool starts (empty: all 0). `admit`: permits to take now,
    refused at once (a Failed OverloadedError) if not free; 0: Admit got them."""

    id: int
    raw: bool
    deadline: float | None
    input_ids: bytes
    token_type_ids: bytes
    lengths: bytes
    pool_starts: bytes = b""
    admit: int = 0
    # Queue the inputs in the interactive lane (router/lanes.py).
    interactive: bool = False
    # The request span the inputs' queue and inference spans join (W3C
    # traceparent, proto/tracing); "" when tracing is off: omitted on the wire.
    traceparent: str = ""
    # Which served model's queue and permits (RouterConfig.models order).
    model: int = 0
    # bge-m3 outputs each input also asks for (router/multi_output.Wanted bits).
    wanted: int = 0


class Abort(_Msg, tag="abort"):
    """Withdraw call `id`: queued inputs never run, permits come back."""

    id: int


class Release(_Msg, tag="release"):
    """Call `id` was admitted but will not submit (tokenizer error, deadline)."""

    id: int


class MetricsQuery(_Msg, tag="mq"):
    """A front's /metrics: the owner answers with the server-wide totals."""

    id: int


class MetricsPart(_Msg, tag="mp"):
    """A front's own counters, answering the owner's MetricsCollect: one
    snapshot per served model, keyed by its index (metrics.snapshot_models)."""

    id: int
    snapshot: dict[str, object]


# ---- owner → front


class Welcome(_Msg, tag="welcome"):
    max_batch_requests: int | None
    # Every served model's limit, in order (0: none); the first is also above.
    model_max_batch_requests: list[int] = []


class ProbeReply(_Msg, tag="probed"):
    ready_fronts: list[int]


class Admitted(_Msg, tag="admitted"):
    id: int
    granted: bool


class Results(_Msg, tag="results"):
    """Finished inputs, any calls: entry k is input `indices[k]` of call
    `ids[k]`, `sizes[k]` float32 values of `values` in order, a [rows, size/rows]
    matrix if `rows[k]` (raw), else one row."""

    ids: list[int]
    indices: list[int]
    rows: list[int]
    sizes: list[int]
    queue_s: list[float]
    inference_s: list[float]
    values: bytes


class Failed(_Msg, tag="failed"):
    """Inputs of call `id` that failed with an EmbedServeError (class name, message)."""

    id: int
    indices: list[int]
    error: str
    message: str


class MetricsCollect(_Msg, tag="mc"):
    id: int


class MetricsReply(_Msg, tag="mr"):
    id: int
    snapshot: dict[str, object]


Message = Union[
    Hello, Ready, Probe, Admit, Submit, Abort, Release, MetricsQuery, MetricsPart,
    Welcome, ProbeReply, Admitted, Results, Failed, MetricsCollect, MetricsReply,
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Message])


def encode_frame(messages: list[Message]) -> bytes:
    return frame(_encoder.encode(messages))


class FramedLink(FrameProtocol):
    """One end of a link. `on_messages` gets each frame's messages in order;
    `on_lost` is called once when the connection ends (None: closed cleanly)."""

    def __init__(self, on_messages: Callable[[list[Message]], None], on_lost: Callable[[Exception | None], None]) -> None:
        super().__init__()
        self._on_messages = on_messages
        self._on_lost = on_lost
        self._outbox: list[Message] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        # Called just before a frame is written: the owner adds the results that
        # finished during this iteration, packed as one message.
        self.before_flush: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._loop = asyncio.get_running_loop()

    def send(self, message: Message) -> None:
        if self.closed:
            return
        self._outbox.append(message)
        self.wake()

    def wake(self) -> None:
        """Write a frame at the end of this iteration."""
        if not self._flush_scheduled and not self.closed:
            assert self._loop is not None
            self._flush_scheduled = True
            # call_soon runs after everything already scheduled in this iteration:
            # what they send joins the same frame.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.before_flush is not None:
            self.before_flush()
        messages, self._outbox = self._outbox, []
        if messages:
            self.send_frame(_encoder.encode(messages))

    def frame_received(self, payload: bytes) -> None:
        self._on_messages(_decoder.decode(payload))

    def garbled(self, exc: Exception) -> None:
        logger.error("owner link: bad frame (%s); closing it", exc)

    def frame_link_lost(self, exc: Exception | None) -> None:
        self._outbox.clear()
        self._on_lost(exc)

    def close(self) -> None:
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def probe_owner(path: str, timeout_s: float = 2.0) -> list[int] | None:
    """Blocking readiness probe for the launcher: the fronts the owner counts as
    serving, or None if the owner does not answer (yet)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(encode_frame([Probe()]))
            header = _recv_exactly(sock, LENGTH.size)
            (size,) = LENGTH.unpack(header)
            if size > MAX_FRAME_BYTES:
                return None
            for message in _decoder.decode(_recv_exactly(sock, size)):
                if isinstance(message, ProbeReply):
                    return message.ready_fronts
    except (OSError, msgspec.DecodeError):
        return None
    return None


def owner_ready(path: str) -> bool:
    """True once the owner at `path` answers (its backends are connected)."""
    return probe_owner(path) is not None


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("owner closed the probe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
