"""router/quantize.py against sentence-transformers' quantize_embeddings."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from embedserve.router.errors import ValidationError
from embedserve.router.quantize import QUANTIZED, base64_rows, check_ranges, quantize


@pytest.mark.parametrize("width", [384, 13])  # 13: packbits pads the last byte
@pytest.mark.parametrize("precision", QUANTIZED)
def test_equals_sentence_transformers(precision: str, width: int) -> None:
    rows = np.random.default_rng(width).standard_normal((7, width)).astype(np.float32)
    got = quantize(rows, precision)  # type: ignore[arg-type]
    expected = quantize_embeddings(rows, precision)  # type: ignore[arg-type]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_given_ranges_equal_sentence_transformers(precision: str) -> None:
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((3, 16)).astype(np.float32)
    ranges = [[-1.0] * 8 + [0.0] * 8, [1.0] * 8 + [0.0] * 8]  # the second half degenerate
    checked = check_ranges(ranges, precision)  # type: ignore[arg-type]
    expected = quantize_embeddings(rows, precision, ranges=np.asarray(ranges, np.float32))  # type: ignore[arg-type]
    np.testing.assert_array_equal(quantize(rows, precision, checked), expected)  # type: ignore[arg-type]


def test_single_row_has_a_degenerate_range() -> None:
    row = np.array([[0.5, -0.25, 0.0]], np.float32)
    np.testing.assert_array_equal(quantize(row, "uint8"), [[0, 0, 0]])
    np.testing.assert_array_equal(quantize(row, "int8"), [[-128, -128, -128]])


@pytest.mark.parametrize("ranges, precision", [
    ([[0.0, 1.0]], "int8"),
    ([[0.0], [1.0, 2.0]], "int8"),
    ([[], []], "uint8"),
    ([[1.0], [0.0]], "int8"),
    ([[0.0], [1.0]], "binary"),
])
def test_bad_ranges_are_refused(ranges: list[list[float]], precision: str) -> None:
    with pytest.raises(ValidationError):
        check_ranges(ranges, precision)  # type: ignore[arg-type]


def test_ranges_of_another_width_are_refused() -> None:
    with pytest.raises(ValidationError, match="2 dimensions"):
        quantize(np.zeros((1, 3), np.float32), "int8", np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("width", [384, 5])
def test_base64_is_each_rows_raw_bytes(width: int) -> None:
    rows = np.random.default_rng(0).standard_normal((4, width)).astype(np.float32)
    for quantized in (rows, quantize(rows, "int8"), quantize(rows, "ubinary")):
        decoded = [np.frombuffer(base64.b64decode(text), dtype=quantized.dtype.newbyteorder("<"))
                   for text in base64_rows(quantized)]
        np.testing.assert_array_equal(np.stack(decoded), quantized)
