"""Tokenizer pool errors become the same router error on every path (issue 12):
/embed and /predict (encode), /tokenize and /decode answer alike, e.g. 503 while
no worker answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from embedserve.router.errors import BackendUnavailableError, EmbedServeError, TokenizerError, ValidationError
from embedserve.router.infer import EncodeOptions, Inference
from embedserve.router.batch_queue import BatchQueue
from embedserve.router.metrics import Metrics
from embedserve.router.queue_owner import InprocQueueHandle, QueueOwner
from embedserve.tokenizer_pool.pool import (
    InvalidInputError,
    TokenizationError,
    TokenizerFailedError,
    TokenizerUnavailableError,
)


class FailingPool:
    """A tokenizer pool whose every call fails with `error`."""

    def __init__(self, error: TokenizationError) -> None:
        self.error = error

    async def encode(self, *args: Any) -> Any:
        raise self.error

    async def tokenize(self, *args: Any) -> Any:
        raise self.error

    async def decode(self, *args: Any) -> Any:
        raise self.error


CALLS: dict[str, Callable[[Inference], Coroutine[Any, Any, Any]]] = {
    "embed": lambda i: i.run(["a"], EncodeOptions(truncate=True), family="embed"),
    "predict": lambda i: i.run(["a"], EncodeOptions(truncate=True), family="predict"),
    "tokenize": lambda i: i.tokenize(["a"], True, None, "json"),
    "decode": lambda i: i.decode([[1]], True),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(
    ("pool_error", "router_error", "status"),
    [
        (TokenizerUnavailableError("tokenizer worker unavailable: gone"), BackendUnavailableError, 503),
        (TokenizerFailedError("bad"), TokenizerError, 422),
        (InvalidInputError("too long"), ValidationError, 422),
    ],
)
def test_every_path_translates_pool_errors_alike(
    call: str, pool_error: TokenizationError, router_error: type[EmbedServeError], status: int
) -> None:
    queue = InprocQueueHandle(QueueOwner(BatchQueue(max_batch_tokens=100, max_batch_requests=None, padded=False,
                                                    position_offset=0, metrics=Metrics(512)),
                                         [], Metrics(512), "embed"), 8)
    inference = Inference(FailingPool(pool_error), queue, Metrics(512))  # type: ignore[arg-type]
    with pytest.raises(router_error) as info:
        asyncio.run(CALLS[call](inference))
    assert info.value.status == status
    assert queue.permits.available == 8  # a failed call gives its permits back
