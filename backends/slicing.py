"""Cutting a bulk batch into slices, and joining the slices' answers.

A slice is a sub-batch of whole sequences that the forward thread runs in one go;
between two slices it may run interactive work (backends/scheduler.py), so a query
waits for one slice, not for a whole 16k-token batch.

Slices follow the batch's length order, not its arrival order: each slice holds
sequences of similar length, so the engine's own length-sorted padding chunks
(backends/padding.py) inside a slice pad as little as they would on the whole batch.
Inside a slice, sequences keep batch order, so its answer has the engine's usual
shape and `join_*` only has to scatter rows back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embedserve.backends.base import EmbedOutput, ModelBatch
from embedserve.proto.codec import F32Array

IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Slice:
    """Sequences `indices` (ascending) of a batch, as a batch of their own."""

    indices: IndexArray
    batch: ModelBatch


def slice_order(batch: ModelBatch) -> IndexArray:
    """The order slices take sequences in: by length, ties in batch order."""
    order: IndexArray = np.argsort(batch.lengths, kind="stable").astype(np.int64)
    return order


def take_slice(batch: ModelBatch, order: IndexArray, start: int, max_cost: int, padded: bool) -> Slice:
    """The next slice from `order[start:]`: as many sequences as fit in `max_cost`
    (padded or plain tokens, as the engine counts them), at least one."""
    lengths = batch.lengths
    ahead = lengths[order[start:]].astype(np.int64)
    if padded:
        # Lengths ascend along `order`, so a prefix's padded cost is its last length x its size.
        costs = ahead * np.arange(1, len(ahead) + 1)
    else:
        costs = np.cumsum(ahead)
    count = max(1, int(np.searchsorted(costs, max_cost, side="right")))
    return sub_batch(batch, np.sort(order[start : start + count]))


def sub_batch(batch: ModelBatch, indices: IndexArray) -> Slice:
    """Sequences `indices` (ascending) of `batch`, renumbered from 0."""
    cu = batch.cu_seq_lengths.astype(np.int64)
    starts, ends = cu[indices], cu[indices + 1]
    lengths = ends - starts
    # One gather for every per-token array: the positions of the slice's tokens in the batch.
    token_index = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
    new_cu = np.concatenate(([0], np.cumsum(lengths))).astype(np.uint32)
    position = {int(seq): new for new, seq in enumerate(indices.tolist())}
    def renumbered(sequences: frozenset[int]) -> frozenset[int]:
        return frozenset(position[i] for i in sequences if i in position)

    pool_starts = None if batch.pool_starts is None else batch.pool_starts[indices]
    part = ModelBatch(
        batch.input_ids[token_index], batch.token_type_ids[token_index], batch.position_ids[token_index], new_cu,
        int(lengths.max()), renumbered(batch.raw_indices), pool_starts, renumbered(batch.sparse_indices),
        renumbered(batch.colbert_indices),
    )
    return Slice(indices, part)


def join_embed(batch: ModelBatch, slices: Sequence[Slice], outputs: Sequence[EmbedOutput]) -> EmbedOutput:
    """The answer the whole batch would have had: pooled rows and token rows in batch order."""
    pooled: dict[int, F32Array] = {}
    raw: dict[int, F32Array] = {}
    sparse: dict[int, F32Array] = {}
    colbert: dict[int, F32Array] = {}
    width = token_width = colbert_dim = 0
    for part, output in zip(slices, outputs):
        width, token_width = output.pooled.shape[1], output.token_rows.shape[1]
        colbert_dim = max(colbert_dim, output.colbert_rows.shape[1])
        pooled_row = token_row = sparse_row = colbert_row = 0
        lengths = part.batch.lengths
        for local, seq in enumerate(part.indices.tolist()):
            length = int(lengths[local])
            if local in part.batch.raw_indices:
                raw[seq] = output.token_rows[token_row : token_row + length]
                token_row += length
            else:
                pooled[seq] = output.pooled[pooled_row]
                pooled_row += 1
            if local in part.batch.sparse_indices:
                sparse[seq] = output.sparse_weights[sparse_row : sparse_row + length]
                sparse_row += length
            if local in part.batch.colbert_indices:
                colbert[seq] = output.colbert_rows[colbert_row : colbert_row + length - 1]
                colbert_row += length - 1
    return EmbedOutput.assemble(pooled, raw, width, token_width, sparse, colbert, colbert_dim)


def join_predict(batch: ModelBatch, slices: Sequence[Slice], outputs: Sequence[F32Array]) -> F32Array:
    """Classifier rows of every slice, back in batch order."""
    first = outputs[0]
    joined: F32Array = np.empty((batch.size, *first.shape[1:]), dtype=first.dtype)
    for part, rows in zip(slices, outputs):
        joined[part.indices] = rows
    return joined
