"""Pooling of token states in numpy, for engines whose runtime returns arrays."""

from __future__ import annotations

import numpy as np


def pool(pooling: str, states: np.ndarray, mask: np.ndarray, mean_mask: np.ndarray | None = None) -> np.ndarray:
    """`states` is [n, len, width] (hidden states, or MLM logits for splade); `mask` [n, len];
    `mean_mask`, the tokens mean pooling counts, defaults to `mask`."""
    weights = mask[..., None].astype(np.float32)
    pooled: np.ndarray
    if pooling == "cls":
        pooled = states[:, 0]
    elif pooling == "mean":
        counted = weights if mean_mask is None else mean_mask[..., None].astype(np.float32)
        pooled = (states * counted).sum(axis=1) / np.maximum(counted.sum(axis=1), 1.0)
    elif pooling == "last_token":
        last = mask.sum(axis=1).astype(np.int64) - 1  # right padding: the last real token
        pooled = states[np.arange(states.shape[0]), last]
    elif pooling == "splade":
        pooled = (np.log1p(np.maximum(states, 0.0)) * weights).max(axis=1)
    else:
        raise ValueError(f"unknown pooling {pooling!r}")
    return pooled
