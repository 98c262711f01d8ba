"""The unpadded encoder replayed from CUDA graphs over bucketed batch shapes.

A CUDA graph replays a fixed sequence of kernels over fixed buffers: one launch
instead of ~15 per layer, so small batches stop paying the CPU's launch time. Its
shapes are frozen, so batches are padded up to one of a few *buckets*:

- total tokens: sizes about `2 ** (1 / steps)` apart (multiples of 64) from
  `SMALLEST_TOKENS` up to `max_batch_tokens`, the last exactly that;
- sequence slots per token size: `SEQ_SLOTS` (capped at the token size, and enough
  to hold it): the attention kernel's grid spans every slot, so slots far beyond the
  batch's sequences cost empty blocks; hence several;
- `max_seqlen` fixed per bucket: the model's longest sequence (or the bucket size).

A batch goes into the smallest bucket that holds its tokens and its sequences plus
the padding: the spare tokens form extra sequences of at most `PAD_SEQ_TOKENS` pad
tokens after the real ones (attention never crosses a sequence boundary, and every
other op is token-wise, so the real tokens' states are exactly the unpadded
ones), and the remaining slots are empty sequences. The real batch is the padded
one's prefix, so its states are the graph output's first rows.

Graphs are captured at start, largest first, sharing one memory pool; at most
`MAX_GRAPHS` (coarser token steps otherwise). Anything that fits no bucket runs
eagerly; a capture failure is logged once and everything runs eagerly. On CPU,
`EagerForward` stands in for a capture with the same static buffers, so the
bucketing, padding, slicing and fallback run in the CPU tests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from embedserve.backends.base import ModelBatch
from embedserve.backends.varlen import NamedKernel, PackedBatch, Upload, VarlenEncoder

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE

logger = logging.getLogger(__name__)

SMALLEST_TOKENS = 128
SEQ_SLOTS = (8, 32, 128, 256, 512, 1024, 2048)
MAX_GRAPHS = 128
TOKEN_ALIGN = 64  # tensor-core GEMMs like row counts in multiples of 64
# Padding sequences are at most this long: attention over padding costs its length
# squared, so many short ones cost less than few long ones (and slots are cheap).
PAD_SEQ_TOKENS = 128


@dataclass(frozen=True, order=True)
class Bucket:
    tokens: int
    seqs: int
    max_seqlen: int


def token_sizes(max_tokens: int, smallest: int = SMALLEST_TOKENS, steps_per_doubling: int = 2) -> list[int]:
    """Bucket sizes from `smallest` up to and including `max_tokens`."""
    if max_tokens <= smallest:
        return [max_tokens]
    sizes: list[int] = []
    step = 0
    while True:
        size = int(math.ceil(smallest * 2 ** (step / steps_per_doubling) / TOKEN_ALIGN) * TOKEN_ALIGN)
        if size >= max_tokens:
            break
        if not sizes or size > sizes[-1]:
            sizes.append(size)
        step += 1
    return [*sizes, max_tokens]


def plan_buckets(max_tokens: int, max_seqlen: int, max_graphs: int = MAX_GRAPHS,
                 smallest: int = SMALLEST_TOKENS, seq_slots: tuple[int, ...] = SEQ_SLOTS) -> tuple[Bucket, ...]:
    """The buckets to capture, smallest first; no more than `max_graphs`: half-doubling
    token steps if they fit, else doublings, else the largest sizes only."""
    buckets: list[Bucket] = []
    for steps in (2, 1):
        # A bucket's sequences hold at most seqs x max_seqlen tokens: larger ones could never be used.
        buckets = [Bucket(tokens, seqs, min(max_seqlen, tokens))
                   for tokens in token_sizes(max_tokens, smallest, steps)
                   for seqs in sorted({min(s, tokens) for s in seq_slots})
                   if tokens <= seqs * min(max_seqlen, tokens)]
        if len(buckets) <= max_graphs:
            break
    return tuple(sorted(buckets)[-max_graphs:])


def padding_lengths(pad_tokens: int, max_seqlen: int) -> list[int]:
    """The spare tokens as sequences of at most `PAD_SEQ_TOKENS` (and `max_seqlen`)."""
    longest = min(max_seqlen, PAD_SEQ_TOKENS)
    full, rest = divmod(pad_tokens, longest)
    return [longest] * full + ([rest] if rest else [])


def choose_bucket(buckets: tuple[Bucket, ...], tokens: int, seqs: int, max_length: int) -> Bucket | None:
    """The smallest bucket (by tokens, then slots) that holds the batch and its padding."""
    for bucket in buckets:  # sorted
        if tokens > bucket.tokens or max_length > bucket.max_seqlen:
            continue
        if seqs + len(padding_lengths(bucket.tokens - tokens, bucket.max_seqlen)) <= bucket.seqs:
            return bucket
    return None


def capture_example(bucket: Bucket, pad_id: int) -> ModelBatch:
    """A batch that fills `bucket` with sequences of its max_seqlen: every planned
    bucket holds it (tokens <= seqs x max_seqlen), whatever its padding would need.
    One short sequence would not do: its spare tokens, cut into PAD_SEQ_TOKENS
    pieces, can outnumber a large bucket's slots."""
    full, rest = divmod(bucket.tokens, bucket.max_seqlen)
    lengths = [bucket.max_seqlen] * full + ([rest] if rest else [])
    positions = np.concatenate([np.arange(n, dtype=np.uint32) for n in lengths])
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    return ModelBatch(np.full(bucket.tokens, pad_id, np.uint32), np.zeros(bucket.tokens, np.uint32), positions, cu,
                      max(lengths))


def pad_to_bucket(batch: ModelBatch, bucket: Bucket, pad_id: int) -> ModelBatch:
    """`batch` followed by padding sequences of `pad_id` tokens and empty sequences,
    `bucket.tokens` tokens in `bucket.seqs` sequences in all."""
    tokens = len(batch.input_ids)
    pads = padding_lengths(bucket.tokens - tokens, bucket.max_seqlen)
    empty = bucket.seqs - batch.size - len(pads)
    if tokens > bucket.tokens or empty < 0 or batch.max_length > bucket.max_seqlen:
        raise ValueError(f"a batch of {tokens} tokens in {batch.size} sequences does not fit {bucket}")
    spare = bucket.tokens - tokens
    lengths = np.array(pads + [0] * empty, dtype=np.int64)
    cu = np.concatenate([batch.cu_seq_lengths.astype(np.int64), tokens + np.cumsum(lengths)])
    positions = np.concatenate([np.arange(n, dtype=np.uint32) for n in pads]) if pads else np.empty(0, np.uint32)
    return ModelBatch(
        input_ids=np.concatenate([batch.input_ids, np.full(spare, pad_id, np.uint32)]),
        token_type_ids=np.concatenate([batch.token_type_ids, np.zeros(spare, np.uint32)]),
        position_ids=np.concatenate([batch.position_ids, positions]),
        cu_seq_lengths=cu.astype(np.uint32),
        max_length=bucket.max_seqlen,
    )


def real_prefix(padded: PackedBatch, tokens: int, seqs: int, max_length: int) -> PackedBatch:
    """The real batch as views of its padded form, which it keeps as `bucket`."""
    return PackedBatch(
        input_ids=padded.input_ids[:tokens],
        token_type_ids=padded.token_type_ids[:tokens],
        position_ids=padded.position_ids[:tokens],
        cu_seqlens=padded.cu_seqlens[: seqs + 1],
        seq_index=padded.seq_index[:tokens],
        lengths=padded.lengths[:seqs],
        max_length=max_length,
        bucket=padded,
    )


Forward = Callable[[PackedBatch], torch.Tensor]
# Reads of a packed batch the forward depends on: copied into the static buffers.
STATIC_FIELDS = ("input_ids", "token_type_ids", "position_ids", "cu_seqlens")


class Replay(Protocol):
    def run(self, packed: PackedBatch) -> torch.Tensor:
        """The forward's output for `packed` (same shapes as the example), in a buffer
        the next `run` overwrites."""


class EagerForward:
    """CPU stand-in for a captured graph: the same static buffers, run eagerly."""

    def __init__(self, forward: Forward, example: PackedBatch) -> None:
        self._forward = forward
        self._static = _static_copy(example)
        self._out = forward(self._static).clone()

    def run(self, packed: PackedBatch) -> torch.Tensor:
        _fill(self._static, packed)
        self._out.copy_(self._forward(self._static))
        return self._out


class CudaGraphForward:
    """The forward captured once on `example`'s shapes; `run` copies a batch of the same
    shapes into the captured inputs and replays."""

    def __init__(self, forward: Forward, example: PackedBatch, pool: _POOL_HANDLE | None = None,
                 warmups: int = 2) -> None:
        self._static = _static_copy(example)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: lazy init, cuBLAS workspaces, compilation
            for _ in range(warmups):
                forward(self._static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self._out = forward(self._static)

    def run(self, packed: PackedBatch) -> torch.Tensor:
        _fill(self._static, packed)
        self.graph.replay()
        return self._out


def _static_copy(example: PackedBatch) -> PackedBatch:
    return PackedBatch(
        input_ids=example.input_ids.clone(), token_type_ids=example.token_type_ids.clone(),
        position_ids=example.position_ids.clone(), cu_seqlens=example.cu_seqlens.clone(),
        seq_index=example.seq_index.clone(), lengths=example.lengths.clone(), max_length=example.max_length,
    )


def _fill(static: PackedBatch, packed: PackedBatch) -> None:
    if packed.max_length != static.max_length:
        raise ValueError(f"max_length {packed.max_length} is not the captured {static.max_length}")
    for name in STATIC_FIELDS:
        getattr(static, name).copy_(getattr(packed, name), non_blocking=True)


ReplayFactory = Callable[[Forward, PackedBatch], Replay]


class GraphedEncoder:
    """An unpadded encoder whose embed forward replays captured graphs where a bucket
    fits (`classify` runs eagerly). `capture()` first; until then, or after a capture
    failure, every batch runs eagerly."""

    def __init__(self, inner: VarlenEncoder, buckets: tuple[Bucket, ...], device: str,
                 make_replay: ReplayFactory | None = None) -> None:
        self.inner = inner
        self.kernel: NamedKernel = inner.kernel
        self.buckets = tuple(sorted(buckets))
        self._device = device
        self._make_replay = make_replay or _default_factory(device)
        self._replays: dict[Bucket, Replay] = {}
        self.failure: str | None = None
        self.capture_seconds = 0.0
        self.replayed = 0  # forwards from a graph, and run eagerly (bench/issue16.py reports them)
        self.eager = 0

    @property
    def captured(self) -> int:
        return len(self._replays)

    def capture(self) -> None:
        """Capture every bucket, largest first; on a failure, none (logged once)."""
        started = time.monotonic()
        try:
            with torch.inference_mode():
                for bucket in sorted(self.buckets, reverse=True):
                    self._replays[bucket] = self._make_replay(self.inner.hidden_states, self._example(bucket))
        except Exception as exc:  # noqa: BLE001 - any capture problem: run eagerly, say why once
            self._replays.clear()
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            logger.warning("CUDA graph capture failed, running eagerly: %s", self.failure)
            if self._device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
        self.capture_seconds = time.monotonic() - started
        if self._replays:
            logger.info("captured %d graphs (buckets of %d to %d tokens) in %.1fs", len(self._replays),
                        self.buckets[0].tokens, self.buckets[-1].tokens, self.capture_seconds)

    def _example(self, bucket: Bucket) -> PackedBatch:
        example = capture_example(bucket, self.inner.pad_token_id)
        return self.inner.pack(pad_to_bucket(example, bucket, self.inner.pad_token_id), self._device)

    def bucket_for(self, batch: ModelBatch) -> Bucket | None:
        if not self._replays:
            return None
        bucket = choose_bucket(self.buckets, len(batch.input_ids), batch.size, batch.max_length)
        return bucket if bucket in self._replays else None

    def pack(self, batch: ModelBatch, device: str, put: Upload | None = None) -> PackedBatch:
        bucket = self.bucket_for(batch)
        if bucket is None:
            return self.inner.pack(batch, device, put)
        padded = self.inner.pack(pad_to_bucket(batch, bucket, self.inner.pad_token_id), device, put)
        return real_prefix(padded, len(batch.input_ids), batch.size, batch.max_length)

    def hidden_states(self, packed: PackedBatch) -> torch.Tensor:
        """[tokens, hidden]; from a replay, a view of its output buffer: read it (queue the
        reads) before the next call."""
        padded = packed.bucket
        if padded is not None:
            bucket = Bucket(int(padded.input_ids.shape[0]), int(padded.lengths.shape[0]), padded.max_length)
            replay = self._replays.get(bucket)
            if replay is not None:
                self.replayed += 1
                return replay.run(padded)[: packed.input_ids.shape[0]]
        self.eager += 1
        return self.inner.hidden_states(packed)

    def classify(self, packed: PackedBatch) -> torch.Tensor:
        return self.inner.classify(packed)


def _default_factory(device: str) -> ReplayFactory:
    if not device.startswith("cuda"):
        return EagerForward
    pool = torch.cuda.graph_pool_handle()  # one pool: buckets never run at once

    def make(forward: Forward, example: PackedBatch) -> Replay:
        return CudaGraphForward(forward, example, pool)

    return make
