"""How a front reaches the batch queue: a handle with `submit` and `abort`.

The front side (`Inference`, the HTTP routes, the gRPC servicers) never touches
`BatchQueue` or `Dispatcher`; it holds a `QueueHandle`. Today the only
in-process one is `InprocQueueHandle` (router/queue_owner.py), which calls the
queue owner on the same event loop; the cross-process one is
`RemoteQueueHandle` (router/remote_queue.py: fronts in several processes, one
queue owner process, issue 12), which sends admit, submit and abort messages;
the front's code does not change. The server-wide concurrency permits sit
behind the handle too (`admit`/`release`), since they belong to the owner. TEI's `Queue` is
such a handle; vLLM keeps `InprocClient` and `AsyncMPClient` behind one
interface the same way.

Everything that crosses the handle is plain data (arrays, numbers, errors), so
that it can become a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TokenizedInput:
    """One input as the queue takes it: the tokenizer's ids and where pooling starts."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    # Leading tokens mean pooling leaves out (the prompt, include_prompt false).
    pool_start: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class EntryResult:
    """One input's answer: its pooled row, or its [tokens, hidden] matrix if raw."""

    values: np.ndarray
    queue_time_s: float
    inference_time_s: float


@dataclass(eq=False)
class Admission:
    """Permits asked for one call. `granted` resolves True once they are held,
    False if refused (429); the call ends with `QueueHandle.release`."""

    count: int
    granted: asyncio.Future[bool]
    # The handle's own key for the call (the remote handle's message id).
    id: int = 0
    # Its inputs went to the queue: the owner gives the permits back when they
    # are done or aborted.
    submitted: bool = False
    # Decided with the submit, not before (RemoteQueueHandle, calls that do not
    # wait): `granted` is True meanwhile, and a refusal fails the inputs with 429.
    deferred: bool = False


class EntryFuture(Protocol):
    """What the queue and the dispatcher need of an entry's future: an
    asyncio.Future, or the queue owner process's slot that sends the result to
    its front (router/owner/service.py)."""

    def done(self) -> bool: ...
    def set_result(self, result: EntryResult, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


@dataclass(eq=False)
class Submission:
    """One call's inputs in the queue, one future per input, in order.

    The front awaits the futures; a future the front resolves or cancels itself
    (deadline, client gone) is settled for the queue too, once `abort` is called.
    """

    results: list[asyncio.Future[EntryResult]]


class QueueHandle(Protocol):
    """The queue as a front sees it (front side of the future process boundary)."""

    @property
    def max_batch_requests(self) -> int | None:
        """Inputs per batch at most (shown by /info and gRPC Info); None: no limit."""
        ...

    def admit(self, count: int, *, wait: bool) -> Admission:
        """Ask for `count` server-wide permits (--max-concurrent-requests):
        refused at once if not free (HTTP, unary gRPC), or, with `wait`, granted
        first come first served (gRPC streams)."""
        ...

    def release(self, admission: Admission) -> None:
        """The call is over (answered, failed, or never submitted): give back its
        permits, or withdraw its wait for them."""
        ...

    def submit(
        self,
        inputs: Sequence[TokenizedInput],
        *,
        raw: bool,
        deadline: float | None,
        admission: Admission | None = None,
        interactive: bool = False,
        traceparent: str = "",
        wanted: int = 0,
    ) -> Submission:
        """Queue every input of one call, in order (under `admission`'s permits),
        in the interactive lane or the bulk one (router/lanes.py).

        `traceparent`: the request span (W3C) the inputs' queue and inference
        spans belong to, wherever the queue lives; "" when tracing is off.

        `raw` asks for per-token vectors (/embed_all). Past `deadline` (a
        `time.perf_counter()` instant: CLOCK_MONOTONIC, the same in every process
        of the machine) an input still queued fails with DeadlineExceededError
        instead of running.

        `wanted`: bge-m3 outputs each input also asks for (router/multi_output.Wanted
        bits); its result is then `multi_output.pack`'s row.
        """
        ...

    def abort(self, submission: Submission) -> None:
        """Withdraw the submission's inputs that have not run yet: they never
        reach a backend. Their futures the front has not settled are cancelled."""
        ...

    async def start(self) -> None:
        """Ready to take submissions (in-process: the dispatch tasks run)."""
        ...

    async def close(self) -> None:
        """No more submissions; what is in flight is abandoned."""
        ...
