"""until_disconnected on its own: the work runs in the caller's task, and a
disconnect cancels it into ClientGone. A hand-fed ASGI receive stands in for Hypercorn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from embedserve.router.routes._http import ClientGone, HttpCall, until_disconnected


def _call(disconnect: asyncio.Event) -> HttpCall:
    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/embed", "headers": []}
    return HttpCall(None, scope, receive)  # type: ignore[arg-type]  # the state is not read


def test_the_works_result_comes_back() -> None:
    async def main() -> int:
        async def work() -> int:
            await asyncio.sleep(0)
            return 7

        return await until_disconnected(_call(asyncio.Event()), work())

    assert asyncio.run(main()) == 7


def test_the_works_error_comes_back() -> None:
    async def main() -> None:
        async def work() -> None:
            raise ValueError("no")

        await until_disconnected(_call(asyncio.Event()), work())

    with pytest.raises(ValueError):
        asyncio.run(main())


def test_a_disconnect_cancels_the_work_and_is_client_gone() -> None:
    cleaned_up: list[bool] = []

    async def main() -> None:
        gone = asyncio.Event()

        async def work() -> None:
            try:
                gone.set()
                await asyncio.sleep(60)
            finally:
                cleaned_up.append(True)

        with pytest.raises(ClientGone):
            await until_disconnected(_call(gone), work())
        # The task is not left cancelled: it can still answer.
        await asyncio.sleep(0)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())
    assert cleaned_up == [True]


@pytest.mark.parametrize("swallow", ["returns", "raises"])
def test_work_that_swallows_the_cancellation_is_still_client_gone(swallow: str) -> None:
    async def main() -> None:
        gone = asyncio.Event()

        async def work() -> int:
            try:
                gone.set()
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                if swallow == "raises":
                    raise RuntimeError("converted") from None
            return 1

        with pytest.raises(ClientGone):
            await until_disconnected(_call(gone), work())
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(main())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def handler() -> None:
            async def work() -> None:
                started.set()
                await asyncio.sleep(60)

            await until_disconnected(_call(asyncio.Event()), work())

        task = asyncio.ensure_future(handler())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
