"""TEI's character guard, shared by the router's pool client and the workers."""

from __future__ import annotations

import pytest

from embedserve.tokenizer_pool.limits import EncodeError, character_limit, check_characters, guard_text


def test_the_limit_is_max_input_length_times_250() -> None:
    assert character_limit(512) == 128_000


def test_over_the_limit_is_refused_with_tei_message() -> None:
    check_characters(10, 10)
    with pytest.raises(EncodeError) as info:
        check_characters(11, 10)
    assert str(info.value) == "`inputs` must have less than 10 characters. Given: 11"
    with pytest.raises(EncodeError):
        guard_text("x" * 11, truncate=False, limit=10)


def test_truncation_cuts_to_the_limit_in_bytes_on_a_character_boundary() -> None:
    assert guard_text("x" * 11, truncate=True, limit=10) == "x" * 10
    assert guard_text("short", truncate=False, limit=10) == "short"
    # 'é' is two bytes: eleven of them are 22 bytes; a 10-byte cut keeps five whole ones.
    assert guard_text("é" * 11, truncate=True, limit=10) == "é" * 5
    assert guard_text("aé" * 6, truncate=True, limit=10) == "aéaéaé" + "a"
