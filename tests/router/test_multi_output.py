"""bge-m3's outputs on the router side (router/multi_output.py): the batch asks the
backend for the union of what its entries want, the dispatcher packs each entry's
parts behind its pooled row, the front cuts them back and finishes them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from embedserve.router.backend_client import BatchOutput
from embedserve.router.batch_queue import BatchQueue, QueueEntry
from embedserve.router.dispatcher import _split_results
from embedserve.router.errors import ModelTypeError
from embedserve.router.metrics import Metrics
from embedserve.router.multi_output import ModelHeads, Wanted, lexical_weights, pack, unpack
from embedserve.router.vectors import l2_normalized


def test_lexical_weights_keep_each_ids_largest_positive_weight_ascending() -> None:
    ids = np.array([101, 7, 5, 7, 9, 5, 102], np.uint32)
    weights = np.array([0.0, 0.2, 0.5, 0.9, 0.0, 0.1, 0.3], np.float32)
    assert lexical_weights(weights, ids) == [(5, pytest.approx(0.5)), (7, pytest.approx(0.9)), (102, pytest.approx(0.3))]
    assert lexical_weights(np.zeros(3, np.float32), ids[:3]) == []


def test_pack_and_unpack_round_trip() -> None:
    dense, weights, vectors = np.arange(4, dtype=np.float32), np.array([0, 1, 2], np.float32), np.ones((2, 3), np.float32)
    for wanted, packed in ((Wanted.SPARSE, pack(dense, weights, None)), (Wanted.MULTI_VECTOR, pack(dense, None, vectors)),
                           (Wanted.SPARSE | Wanted.MULTI_VECTOR, pack(dense, weights, vectors))):
        answer = unpack(packed, wanted, tokens=3, hidden=4, colbert_dim=3)
        np.testing.assert_array_equal(answer.dense, dense)
        assert len(answer.token_weights) == (3 if Wanted.SPARSE in wanted else 0)
        assert answer.multi_vectors.shape == ((2, 3) if Wanted.MULTI_VECTOR in wanted else (0, 3))
    with pytest.raises(RuntimeError, match="bug"):
        unpack(pack(dense, weights, None), Wanted.SPARSE, tokens=4, hidden=4, colbert_dim=3)


def test_l2_normalized_leaves_zero_rows_zero() -> None:
    rows = l2_normalized(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32))
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])


def test_models_without_heads_refuse_what_they_lack() -> None:
    ModelHeads(True, 8).require(Wanted.SPARSE | Wanted.MULTI_VECTOR)
    with pytest.raises(ModelTypeError, match="sparse"):
        ModelHeads().require(Wanted.SPARSE)
    with pytest.raises(ModelTypeError, match="multi-vector"):
        ModelHeads(True, 0).require(Wanted.MULTI_VECTOR)


def test_a_batch_asks_for_the_union_and_each_entry_gets_its_own_parts() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = BatchQueue(max_batch_tokens=100, max_batch_requests=None, padded=False, position_offset=0,
                           metrics=Metrics(512))
        wants = [Wanted.NONE, Wanted.SPARSE, Wanted.MULTI_VECTOR, Wanted.SPARSE | Wanted.MULTI_VECTOR]
        lengths = [3, 4, 2, 5]
        entries = [QueueEntry(np.arange(n, dtype=np.uint32), np.zeros(n, np.uint32), loop.create_future(),
                              wanted=int(w)) for n, w in zip(lengths, wants)]
        for entry in entries:
            queue.append(entry)
        batch = queue.take_batch()
        assert batch is not None and len(batch.entries) == 4
        assert (list(batch.message.sparse_indices), list(batch.message.colbert_indices)) == ([1, 3], [2, 3])
        hidden, dim = 2, 3
        pooled = np.arange(4 * hidden, dtype=np.float32).reshape(4, hidden)
        weights = np.arange(4 + 5, dtype=np.float32)  # entries 1 and 3, one per token
        vectors = np.arange((2 - 1 + 5 - 1) * dim, dtype=np.float32).reshape(-1, dim)  # entries 2 and 3, CLS left out
        output = BatchOutput(pooled, np.empty((0, hidden), np.float32), 14, 0.0, weights, vectors)
        values = _split_results(batch, output)
        np.testing.assert_array_equal(values[0], pooled[0])
        sparse_only = unpack(values[1], Wanted.SPARSE, 4, hidden, dim)
        np.testing.assert_array_equal(sparse_only.token_weights, weights[:4])
        colbert_only = unpack(values[2], Wanted.MULTI_VECTOR, 2, hidden, dim)
        np.testing.assert_array_equal(colbert_only.multi_vectors, vectors[:1])
        both = unpack(values[3], Wanted.SPARSE | Wanted.MULTI_VECTOR, 5, hidden, dim)
        np.testing.assert_array_equal(both.dense, pooled[3])
        np.testing.assert_array_equal(both.token_weights, weights[4:])
        np.testing.assert_array_equal(both.multi_vectors, vectors[1:])
    finally:
        loop.close()
