"""The encode link's messages, in length-prefixed msgpack frames (proto/frames.py).

Encode is the router's per-request hop, so it skips gRPC: the router sends every
encode call one event-loop iteration produced for a worker as one frame, and the
worker answers each frame with one frame. Token ids travel packed (one uint32
buffer per call), never as one number per token. Health, /tokenize and /decode
stay on the worker's gRPC service (proto/tokenizer.proto).

A frame's payload is a msgpack array of `EncodeCall` (router -> worker) or
`EncodeResult` (worker -> router). Answers carry the call's id; they may come
in any order across frames.

This module imports nothing heavy: the launcher uses `encode_socket_path`.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


def encode_socket_path(grpc_socket_path: str) -> str:
    """The encode link's socket, next to the worker's gRPC socket (its path
    plus two bytes, still under the Unix limit the launcher checks with margin)."""
    return grpc_socket_path + ".e"


class IdInput(msgspec.Struct, tag="ids", gc=False):
    """Client token ids, little-endian uint32 (decoded to text and re-encoded, as TEI does)."""

    packed: bytes


class FramedText(msgspec.Struct, tag="framed", frozen=True, gc=False):
    """A prompt template's text (router/rerank_template.py): the three parts are
    tokenized apart, without special tokens, and joined; truncation cuts only the
    body, so the prefix and the suffix, where a causal reranker answers, stay whole.
    The same type on both sides of the link."""

    prefix: str
    body: str
    suffix: str


# A text, a pair of texts (the tokenizer's pair template), client ids, or a framed text.
WireInput = str | tuple[str, str] | IdInput | FramedText


class EncodeCall(msgspec.Struct, array_like=True, gc=False):
    id: int
    inputs: list[WireInput]
    truncate: bool
    truncate_left: bool
    prompt: str | None
    # The model's index in the worker's TokenizerConfig.models. Last, with a
    # default: a frame from a one-model router decodes the same. (msgspec writes
    # array-like defaults anyway; a 0 costs one byte.)
    model: int = 0


class ErrorKind(IntEnum):
    NONE = 0
    # The input breaks a limit (length, ids): a 422 Validation.
    INVALID_INPUT = 1
    # The tokenizer itself failed: a 422 Tokenizer.
    TOKENIZER_FAILED = 2


class EncodeResult(msgspec.Struct, array_like=True, gc=False):
    id: int
    # Every input's ids, concatenated, little-endian uint32; `lengths` splits them.
    ids: bytes = b""
    lengths: list[int] = []
    # Same layout as `ids`; None when all are zero (single texts, the usual case).
    type_ids: bytes | None = None
    characters: list[int] = []
    pool_start: int = 0
    error_kind: ErrorKind = ErrorKind.NONE
    error: str = ""
