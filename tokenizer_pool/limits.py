"""TEI's character guard (`MAX_CHAR_MULTIPLIER`, core/src/tokenization.rs), in one place.

The router applies it before sending anything to a worker, so an over-long input
never occupies a worker or the router's loop; the worker applies it again as a
defence. This module imports nothing heavy: the router loads it too.
"""

from __future__ import annotations

# TEI refuses (or cuts) inputs longer than max_input_length x this many characters
# before tokenizing.
MAX_CHAR_MULTIPLIER = 250


class EncodeError(ValueError):
    """An input the client must fix (too long, bad ids); maps to 422."""


def character_limit(max_input_length: int) -> int:
    return max_input_length * MAX_CHAR_MULTIPLIER


def check_characters(characters: int, limit: int) -> None:
    """Refuse `characters` over `limit` with TEI's message."""
    if characters > limit:
        raise EncodeError(f"`inputs` must have less than {limit} characters. Given: {characters}")


def guard_text(text: str, truncate: bool, limit: int) -> str:
    """Refuse a text over `limit` characters, or (truncating) cut it to `limit` UTF-8
    bytes, dropping a character the cut would split."""
    if len(text) <= limit:
        return text
    if not truncate:
        check_characters(len(text), limit)
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
