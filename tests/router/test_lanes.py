"""Lane choice: the client's x-priority first, then the request's size."""

from __future__ import annotations

import pytest

from embedserve.router.errors import ValidationError
from embedserve.router.lanes import FIFO, LanePolicy, parse_priority


def test_priority_values() -> None:
    assert parse_priority(None) is None
    assert parse_priority("high") == "high"
    assert parse_priority(" LOW ") == "low"
    with pytest.raises(ValidationError, match="`x-priority` must be `high` or `low`, got 'urgent'"):
        parse_priority("urgent")


def test_header_beats_size_and_fifo_has_one_lane() -> None:
    policy = LanePolicy(enabled=True, interactive_max_tokens=128)
    assert policy.is_interactive(None, 128) and not policy.is_interactive(None, 129)
    assert policy.is_interactive("high", 10_000)
    assert not policy.is_interactive("low", 3)
    assert not LanePolicy(enabled=True, interactive_max_tokens=0).is_interactive(None, 1)
    assert not FIFO.is_interactive("high", 3)
