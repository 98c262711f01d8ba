"""Everything the routes reach through `request.app.state.embedserve`.

Built in the app's lifespan; no module-level state anywhere in the router.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.backend_client import BackendClient
from router.batch_queue import BatchQueue
from router.dispatcher import Dispatcher
from router.infer import Inference
from router.metrics import Metrics
from router.settings import RouterSettings
from tokenizer_pool.pool import TokenizerPool


@dataclass(frozen=True)
class BackendFacts:
    """What the backends told the router at start (all backends agree)."""

    hidden_size: int
    dtype: str
    backend: str
    is_padded: bool
    max_batch_size: int | None


@dataclass
class AppState:
    settings: RouterSettings
    metrics: Metrics
    tokenizers: TokenizerPool
    backends: list[BackendClient]
    facts: BackendFacts
    queue: BatchQueue
    dispatcher: Dispatcher
    inference: Inference
    draining: bool = False
