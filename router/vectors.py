"""Post-processing of pooled embeddings: Matryoshka cut, then L2 normalisation."""

from __future__ import annotations

import numpy as np


def finish_embeddings(rows: list[np.ndarray], normalize: bool, dimensions: int | None) -> np.ndarray:
    matrix = np.stack(rows)
    if dimensions is not None:
        matrix = matrix[:, :dimensions]
    if not normalize:
        return np.ascontiguousarray(matrix, dtype=np.float32)
    return l2_normalized(matrix)


def l2_normalized(matrix: np.ndarray) -> np.ndarray:
    """Each row at unit length; zero rows stay zero (bge-m3's multi-vectors too, router/multi_output.py)."""
    # Norms in float64, as TEI computes them, so tiny vectors do not lose precision.
    norms = np.linalg.norm(matrix.astype(np.float64), axis=-1, keepdims=True)
    norms[norms == 0.0] = 1.0
    normalized: np.ndarray = (matrix / norms).astype(np.float32)
    return normalized
