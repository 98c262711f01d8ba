from __future__ import annotations

import asyncio

import pytest

from embedserve.router.errors import OverloadedError
from embedserve.router.infer import Permits


def test_try_acquire_is_all_or_nothing() -> None:
    permits = Permits(3)
    assert permits.try_acquire(2) and not permits.try_acquire(2) and permits.try_acquire(1)
    permits.release(3)
    assert permits.available == 3


def test_waiters_are_served_in_order_and_cancellation_gives_back() -> None:
    async def scenario() -> list[str]:
        permits = Permits(2)
        assert permits.try_acquire(2)
        order: list[str] = []

        async def wait(name: str, count: int) -> None:
            await permits.acquire(count)
            order.append(name)

        first = asyncio.create_task(wait("first", 2))
        gone = asyncio.create_task(wait("gone", 1))
        last = asyncio.create_task(wait("last", 1))
        await asyncio.sleep(0)
        assert not permits.try_acquire(1), "a waiter is queued: no jumping ahead"
        gone.cancel()
        permits.release(2)
        await asyncio.wait_for(first, 1)
        permits.release(2)
        await asyncio.wait_for(last, 1)
        assert gone.cancelled()
        permits.release(1)
        assert permits.available == 2
        with pytest.raises(OverloadedError):
            await permits.acquire(3)  # more than exists can never be granted
        return order

    assert asyncio.run(scenario()) == ["first", "last"]
