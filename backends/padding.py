"""Turning a flat batch into padded chunks, shared by the engines that pad.

A batch from the router is in arrival order, lengths mixed. Engines that pad run
it as length-sorted chunks, so a short query never pays for a long passage's
padding; results are put back in batch order by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from embedserve.backends.base import ModelBatch

# A chunk may waste at most this share of its tokens on padding.
MAX_PADDING_WASTE = 0.2


@dataclass(frozen=True)
class PaddedChunk:
    """Sequences `indices` of the batch, right-padded to `input_ids.shape[1]`."""

    indices: list[int]
    input_ids: np.ndarray  # int64 [n, max_len]
    token_type_ids: np.ndarray  # int64 [n, max_len]
    attention_mask: np.ndarray  # int64 [n, max_len]
    lengths: np.ndarray  # int64 [n]
    # The tokens mean pooling counts: the attention mask less each sequence's
    # leading prompt tokens where the model excludes them (ModelBatch.pool_starts).
    mean_mask: np.ndarray  # int64 [n, max_len]


def length_sorted_chunks(lengths: np.ndarray, max_chunk_tokens: int | None) -> Iterator[list[int]]:
    """Group sequence indices by length so that padding wastes little compute."""
    order = np.argsort(lengths, kind="stable")
    chunk: list[int] = []
    token_sum = 0
    for seq in order.tolist():
        length = int(lengths[seq])
        padded = length * (len(chunk) + 1)  # ascending order: this one is the longest
        too_wasteful = padded > (token_sum + length) * (1 + MAX_PADDING_WASTE)
        too_big = max_chunk_tokens is not None and padded > max_chunk_tokens
        if chunk and (too_wasteful or too_big):
            yield chunk
            chunk, token_sum = [], 0
        chunk.append(seq)
        token_sum += length
    if chunk:
        yield chunk


def padded_chunks(batch: ModelBatch, max_chunk_tokens: int | None, pad_token_id: int) -> Iterator[PaddedChunk]:
    lengths = batch.lengths.astype(np.int64)
    starts = batch.cu_seq_lengths[:-1].astype(np.int64)
    for chunk in length_sorted_chunks(lengths, max_chunk_tokens):
        chunk_lengths = lengths[chunk]
        max_len = int(chunk_lengths.max())
        ids = np.full((len(chunk), max_len), pad_token_id, dtype=np.int64)
        types = np.zeros((len(chunk), max_len), dtype=np.int64)
        mask = np.zeros((len(chunk), max_len), dtype=np.int64)
        for row, seq in enumerate(chunk):
            start, length = int(starts[seq]), int(lengths[seq])
            ids[row, :length] = batch.input_ids[start : start + length]
            types[row, :length] = batch.token_type_ids[start : start + length]
            mask[row, :length] = 1
        mean_mask = mask
        if batch.pool_starts is not None:
            mean_mask = mask.copy()
            for row, seq in enumerate(chunk):
                mean_mask[row, : int(batch.pool_starts[seq])] = 0
        yield PaddedChunk(chunk, ids, types, mask, chunk_lengths, mean_mask)


class PaddedEngine:
    """What every engine that runs padded chunks tells the router: it pads (so the
    queue budgets max_len x n), takes any batch size, and is a classifier or not."""

    _is_classifier: bool
    # No bge-m3 heads unless the engine loads them (backends/bgem3.py).
    sparse_head = False
    colbert_dim = 0

    @property
    def is_classifier(self) -> bool:
        return self._is_classifier

    @property
    def is_padded(self) -> bool:
        return True

    @property
    def max_batch_size(self) -> int | None:
        return None
