"""Length-prefixed frames on a Unix stream: the wire under the two msgspec links
(router front <-> queue owner, router/owner_link.py; router <-> tokenizer worker
encode, tokenizer_pool/frames.py).

A frame is a 4-byte little-endian payload length, then the payload (a msgpack
array of one link's messages). Both links write everything one event-loop
iteration produced as one frame, so a busy server makes one write per
iteration, not one per request.
"""

from __future__ import annotations

import struct

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
