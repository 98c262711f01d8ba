"""Which lane a call's inputs queue in: interactive work overtakes bulk work.

Under `--queue-policy priority` a call is *interactive* when the client says so
(`x-priority: high`, HTTP header or gRPC metadata) or, without that, when its
inputs total at most `--interactive-max-tokens` tokens: a search query, not an
indexing batch. `x-priority: low` makes any call bulk. Interactive inputs have
their own dispatch slot per backend and run in the backend before queued bulk
work and between the slices of a running bulk batch; bulk keeps a guaranteed
share of the model's time (backends/scheduler.py). Under `fifo` every call is
bulk: TEI's strict arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from embedserve.router.errors import ValidationError

Priority = Literal["high", "low"]

PRIORITY_HEADER = "x-priority"


def parse_priority(value: str | None) -> Priority | None:
    """The x-priority header or metadata value; None when absent."""
    if value is None:
        return None
    wanted = value.strip().lower()
    if wanted == "high":
        return "high"
    if wanted == "low":
        return "low"
    raise ValidationError(f"`{PRIORITY_HEADER}` must be `high` or `low`, got {value!r}")


@dataclass(frozen=True)
class LanePolicy:
    enabled: bool = True
    interactive_max_tokens: int = 128

    def is_interactive(self, priority: Priority | None, tokens: int) -> bool:
        if not self.enabled:
            return False
        if priority is not None:
            return priority == "high"
        return tokens <= self.interactive_max_tokens


# Every call bulk: TEI's order (--queue-policy fifo).
FIFO = LanePolicy(enabled=False)
