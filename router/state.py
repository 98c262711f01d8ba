"""Everything the routes reach through `request.app.state.embedserve`.

Built in the app's lifespan; no module-level state anywhere in the router.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from embedserve.router.backend_client import BackendClient
from embedserve.router.infer import Inference
from embedserve.router.metrics import Metrics
from embedserve.router.multi_output import ModelHeads
from embedserve.router.operations import Operations
from embedserve.router.queue_handle import QueueHandle
from embedserve.router.remote_queue import RemoteQueueHandle
from embedserve.router.settings import RouterSettings
from embedserve.tokenizer_pool.pool import TokenizerPool


@dataclass(frozen=True)
class BackendFacts:
    """What the backends told the router at start (all backends agree)."""

    hidden_size: int
    dtype: str
    backend: str
    is_padded: bool
    max_batch_size: int | None
    # bge-m3's lexical and multi-vector heads, when the backends run them.
    heads: ModelHeads = ModelHeads()


@dataclass
class AppState:
    settings: RouterSettings
    metrics: Metrics
    tokenizers: TokenizerPool
    backends: list[BackendClient]
    facts: BackendFacts
    # The front's only way to the batch queue and its dispatch to the backends.
    queue: QueueHandle
    inference: Inference
    # What HTTP routes and gRPC servicers call: one method per operation.
    operations: Operations
    draining: bool = False
    # Called once when SIGTERM starts the drain (the gRPC server stops taking calls).
    on_drain: list[Callable[[], None]] = field(default_factory=list)
    # HTTP requests between body read and answered; the drain waits for none.
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Limits of the bodies still arriving. Such a request is not in flight yet, so
    # the drain ends its wait at once instead of holding SIGTERM for a slow upload.
    body_reads: set[asyncio.Timeout] = field(default_factory=set)

    async def render_metrics(self) -> str:
        """/metrics: server-wide totals; with several router processes, every
        process's counters merged by the queue owner."""
        if isinstance(self.queue, RemoteQueueHandle):
            return await self.queue.server_metrics(self.settings.max_input_length)
        return self.metrics.render()

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        for callback in self.on_drain:
            callback()
        now = asyncio.get_running_loop().time()
        for limit in self.body_reads:
            limit.reschedule(now)

    def request_started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no accepted request is left; False if `timeout_s` ran out first."""
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
