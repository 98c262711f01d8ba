"""Length-prefixed frames on a Unix stream: the wire under the two msgspec links
(router front <-> queue owner, router/owner_link.py; router <-> tokenizer worker
encode, tokenizer_pool/frames.py), and the asyncio protocol every end of them is.

A frame is a 4-byte little-endian payload length, then the payload (a msgpack
array of one link's messages). Both links write everything one event-loop
iteration produced as one frame, so a busy server makes one write per
iteration, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import cast

import msgspec

logger = logging.getLogger(__name__)

LENGTH = struct.Struct("<I")
# A legal frame stays far below this (calls are bounded by the client batch size
# and the character guard); a bigger length means a garbled stream, and must not
# make a process buffer gigabytes.
MAX_FRAME_BYTES = 1 << 31


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


class FrameReader:
    """Splits a byte stream into frame payloads."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads `data` completes. Raises ValueError on an impossible length."""
        buffer = self._buffer
        buffer += data
        payloads: list[bytes] = []
        start = 0
        while len(buffer) - start >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"a frame of {size} bytes: the stream is garbled")
            end = start + LENGTH.size + size
            if len(buffer) < end:
                break
            payloads.append(bytes(buffer[start + LENGTH.size : end]))
            start = end
        if start:
            del buffer[:start]
        return payloads


class FrameProtocol(asyncio.Protocol):
    """One end of a framed link. A subclass gets each complete payload, in order,
    in `frame_received` (it decodes it; a msgspec DecodeError there counts as a
    garbled stream), and the end of the connection, once, in `frame_link_lost`.
    A garbled stream is logged and the connection aborted."""

    def __init__(self) -> None:
        self._reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._reader.feed(data):
                self.frame_received(payload)
        except (ValueError, msgspec.DecodeError) as exc:
            self.garbled(exc)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.frame_link_lost(exc)

    def send_frame(self, payload: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(frame(payload))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def frame_received(self, payload: bytes) -> None:
        raise NotImplementedError

    def frame_link_lost(self, exc: Exception | None) -> None:
        """The connection ended (`exc` None: closed cleanly)."""

    def garbled(self, exc: Exception) -> None:
        logger.error("%s: a bad frame (%s); dropping the connection", type(self).__name__, exc)
