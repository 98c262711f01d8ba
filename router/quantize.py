"""Quantized embedding outputs: int8, uint8, binary, ubinary (issue 15, TEI #219).

The conventions are sentence-transformers' `quantize_embeddings`, so an answer
here equals that function applied to the same request's float embeddings:

- binary / ubinary: one bit per dimension, set where the value is > 0, packed
  big-endian into bytes as `numpy.packbits` does (the last byte zero-padded when
  the width is not a multiple of 8); ubinary keeps the bytes as uint8, binary
  shifts them by -128 into int8.
- int8 / uint8: each dimension's [min, max] cut into 255 equal steps; a value's
  step index (floored, clipped to 0..255) is the uint8, minus 128 the int8. A
  dimension whose min equals its max has step 1 (everything lands on 0).

Where int8/uint8 ranges come from: the request's `ranges` ([mins, maxs]), else the
request's own embeddings, never its neighbours in a backend batch, so an answer
does not depend on what else was queued. A single-input request without ranges
therefore has min == max everywhere and quantizes to all 0 (uint8) / -128 (int8).
"""

from __future__ import annotations

import base64
import math
from typing import Literal, get_args

import numpy as np

from embedserve.router.errors import input_validation

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
QUANTIZED: tuple[Precision, ...] = ("int8", "uint8", "binary", "ubinary")
assert set(QUANTIZED) | {"float32"} == set(get_args(Precision))


def check_ranges(ranges: list[list[float]] | None, precision: Precision) -> np.ndarray | None:
    """The request's `ranges` as a float32 [2, width] array; checked before anything runs."""
    if ranges is None:
        return None
    if precision not in ("int8", "uint8"):
        raise input_validation("`ranges` applies to the int8 and uint8 precisions only")
    if len(ranges) != 2 or len(ranges[0]) != len(ranges[1]) or not ranges[0]:
        raise input_validation("`ranges` must be two lists of equal length: the minimum and the maximum of each dimension")
    if not all(math.isfinite(v) for row in ranges for v in row):
        raise input_validation("`ranges` must hold finite numbers")
    array = np.asarray(ranges, dtype=np.float32)
    if (array[0] > array[1]).any():
        raise input_validation("`ranges`: each dimension's minimum must not exceed its maximum")
    return array


def quantize(vectors: np.ndarray, precision: Precision, ranges: np.ndarray | None = None) -> np.ndarray:
    """[n, width] float32 rows in `precision` (float32 returns them unchanged)."""
    if precision == "float32":
        return vectors
    if precision in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        # int16 first: uint8 - 128 would wrap instead of going negative.
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        ranges = np.stack([vectors.min(axis=0), vectors.max(axis=0)])
    elif ranges.shape[1] != vectors.shape[1]:
        raise input_validation(f"`ranges` has {ranges.shape[1]} dimensions but the embeddings have {vectors.shape[1]}")
    lows = ranges[0].astype(np.float32)
    steps = (ranges[1].astype(np.float32) - lows) / np.float32(255)
    steps[steps == 0] = 1
    # float32 throughout, as sentence-transformers computes it on float32 embeddings.
    indices: np.ndarray = np.clip(np.floor((vectors.astype(np.float32) - lows) / steps), 0, 255)
    return indices.astype(np.uint8) if precision == "uint8" else (indices - 128).astype(np.int8)


def base64_rows(vectors: np.ndarray) -> list[str]:
    """Each row's raw bytes in base64: little-endian float32 for floats (OpenAI's
    `encoding_format: base64`), one byte per value (or per 8 bits) when quantized."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4" if vectors.dtype.kind == "f" else vectors.dtype)
    if len(matrix) == 0:
        return []
    row_bytes = matrix.shape[1] * matrix.itemsize
    if row_bytes and row_bytes % 3 == 0:
        # Rows end on whole base64 groups (no padding): encode the matrix once and cut.
        text = base64.b64encode(matrix.data).decode("ascii")
        step = row_bytes // 3 * 4
        return [text[start : start + step] for start in range(0, len(text), step)]
    return [base64.b64encode(row.data).decode("ascii") for row in matrix]

