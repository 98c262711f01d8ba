from __future__ import annotations

import pytest

from embedserve.router.errors import EmptyInputError, MalformedRequestError, ValidationError
from embedserve.router.schemas import EmbedRequest, decode_body, parse_inputs


@pytest.mark.parametrize(
    ("raw", "inputs", "is_batch"),
    [
        ("text", ["text"], False),
        (["a", "b"], ["a", "b"], True),
        ([101, 2054, 102], [[101, 2054, 102]], False),
        ([[101], [102]], [[101], [102]], True),
        (["a", [101, 102]], ["a", [101, 102]], True),
    ],
)
def test_tei_input_union(raw: object, inputs: list[object], is_batch: bool) -> None:
    assert parse_inputs(raw) == (inputs, is_batch)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["", [], ["a", ""], [[]]])
def test_empty_inputs(raw: object) -> None:
    with pytest.raises(EmptyInputError):
        parse_inputs(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [[1.5], [-1], [True, 1], [{"a": 1}], [["a"]]])
def test_bad_inputs(raw: object) -> None:
    with pytest.raises(ValidationError):
        parse_inputs(raw)  # type: ignore[arg-type]


def test_decode_body_errors() -> None:
    with pytest.raises(MalformedRequestError):
        decode_body(b"{not json", EmbedRequest)
    with pytest.raises(ValidationError):
        decode_body(b'{"inputs": "x", "normalize": "yes"}', EmbedRequest)
    body = decode_body(b'{"inputs": "x", "truncation_direction": "Left", "extra": 1}', EmbedRequest)
    assert body.truncation_direction == "Left" and body.normalize is True and body.truncate is None
