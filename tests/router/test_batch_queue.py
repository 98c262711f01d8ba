"""BatchQueue on its own: budgets, order, limits, dropped entries, flattening."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from embedserve.proto.codec import unpack_u32
from embedserve.router.batch_queue import BatchQueue, QueueEntry
from embedserve.router.metrics import Metrics


def _queue(padded: bool, budget: int = 100, max_requests: int | None = None, offset: int = 0) -> BatchQueue:
    return BatchQueue(
        max_batch_tokens=budget, max_batch_requests=max_requests, padded=padded, position_offset=offset,
        metrics=Metrics(512),
    )


def _entry(loop: asyncio.AbstractEventLoop, length: int, first_id: int = 1) -> QueueEntry:
    ids = np.arange(first_id, first_id + length, dtype=np.uint32)
    return QueueEntry(ids, np.zeros(length, np.uint32), loop.create_future())


@pytest.mark.parametrize("padded", [True, False])
def test_batches_never_exceed_the_budget_and_keep_fifo_order(padded: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        rng = random.Random(1)
        queue = _queue(padded, budget=100)
        entries = [_entry(loop, rng.randint(1, 100)) for _ in range(300)]
        for entry in entries:
            queue.append(entry)
        taken: list[QueueEntry] = []
        while (batch := queue.take_batch()) is not None:
            lengths = [len(e) for e in batch.entries]
            cost = max(lengths) * len(lengths) if padded else sum(lengths)
            assert cost == batch.cost <= 100
            taken.extend(batch.entries)
        assert taken == entries
    finally:
        loop.close()


def test_entry_that_does_not_fit_stays_at_the_front() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = _queue(padded=True, budget=100)
        small, big, tail = _entry(loop, 10), _entry(loop, 60), _entry(loop, 5)
        for entry in (small, big, tail):
            queue.append(entry)
        first = queue.take_batch()
        assert first is not None and first.entries == [small]  # 60 x 2 = 120 > 100
        second = queue.take_batch()
        assert second is not None and second.entries == [big]  # padded: 60 x 2 again
        third = queue.take_batch()
        assert third is not None and third.entries == [tail]
    finally:
        loop.close()


def test_max_batch_requests_and_dropped_entries() -> None:
    loop = asyncio.new_event_loop()
    try:
        metrics = Metrics(512)
        queue = BatchQueue(max_batch_tokens=1000, max_batch_requests=2, padded=False, position_offset=0, metrics=metrics)
        entries = [_entry(loop, 3) for _ in range(5)]
        for entry in entries:
            queue.append(entry)
        entries[0].future.cancel()
        entries[2].future.cancel()
        batch = queue.take_batch()
        assert batch is not None and batch.entries == [entries[1], entries[3]]
        # The transport counted those requests when their clients left, once each.
        assert metrics.request_failure.values == {}
        assert len(queue) == 1
    finally:
        loop.close()


def test_flattened_batch_layout() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = _queue(padded=True, budget=100, offset=2)
        queue.append(_entry(loop, 3, first_id=10))
        queue.append(_entry(loop, 2, first_id=20))
        batch = queue.take_batch()
        assert batch is not None
        message = batch.message
        assert unpack_u32(message.input_ids).tolist() == [10, 11, 12, 20, 21]
        assert unpack_u32(message.cu_seq_lengths).tolist() == [0, 3, 5]
        assert unpack_u32(message.position_ids).tolist() == [2, 3, 4, 2, 3]
        assert message.max_length == 3
        assert (batch.token_sum, batch.cost) == (5, 6)
    finally:
        loop.close()


def test_next_batch_waits_for_work() -> None:
    async def scenario() -> list[int]:
        queue = _queue(padded=False)
        loop = asyncio.get_running_loop()
        waiter = asyncio.create_task(queue.next_batch())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        queue.append(_entry(loop, 4))
        batch = await asyncio.wait_for(waiter, 1)
        return [len(e) for e in batch.entries]

    assert asyncio.run(scenario()) == [4]


def test_oversized_entry_is_a_bug() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="This is a bug"):
            _queue(padded=False, budget=10).append(_entry(loop, 11))
    finally:
        loop.close()


def _lane_entry(loop: asyncio.AbstractEventLoop, length: int, interactive: bool) -> QueueEntry:
    entry = _entry(loop, length)
    entry.interactive = interactive
    return entry


def test_lanes_interactive_slot_takes_only_interactive_and_normal_slots_prefer_bulk() -> None:
    loop = asyncio.new_event_loop()
    try:
        queue = _queue(padded=False, budget=100)
        bulk = [_lane_entry(loop, 40, False) for _ in range(4)]
        queries = [_lane_entry(loop, 5, True) for _ in range(3)]
        for entry in (bulk[0], queries[0], bulk[1], queries[1], bulk[2], queries[2], bulk[3]):
            queue.append(entry)
        interactive = queue.take_batch(interactive_only=True)
        assert interactive is not None and interactive.entries == queries
        assert interactive.interactive and interactive.message.interactive
        assert queue.take_batch(interactive_only=True) is None
        normal = queue.take_batch()
        assert normal is not None and normal.entries == bulk[:2] and not normal.message.interactive
        late = _lane_entry(loop, 5, True)
        queue.append(late)
        # A normal slot keeps to bulk while bulk waits ...
        normal = queue.take_batch()
        assert normal is not None and normal.entries == bulk[2:]
        # ... and takes interactive entries when none does, as an interactive batch.
        rest = queue.take_batch()
        assert rest is not None and rest.entries == [late] and rest.message.interactive
        assert len(queue) == 0
    finally:
        loop.close()


def test_interactive_slot_waits_for_interactive_entries_only() -> None:
    async def scenario() -> None:
        queue = _queue(padded=False, budget=100)
        waiter = asyncio.ensure_future(queue.next_batch(interactive_only=True))
        queue.append(_lane_entry(asyncio.get_running_loop(), 10, False))
        await asyncio.sleep(0)
        assert not waiter.done()
        query = _lane_entry(asyncio.get_running_loop(), 3, True)
        queue.append(query)
        batch = await asyncio.wait_for(waiter, 5)
        assert batch.entries == [query]

    asyncio.run(scenario())
