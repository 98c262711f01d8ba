"""bge-m3's outputs beyond the dense row: lexical weights and multi-vectors
(ColBERT), computed by the backend's heads in the same forward pass as the dense
row (backends/bgem3.py).

One place for: which outputs an input asks for (`Wanted`, a bit set that rides the
queue entry, the cross-process submit and the backend's `Batch`), how one input's
answer crosses from the queue owner to the front (`pack` there, `unpack` here: one
flat float32 row, so the owner-to-front link carries it as it carries any row), and
the lexical weights' aggregation per token id by max (FlagEmbedding's
`_process_token_weights`). Multi-vectors are normalized as dense rows are (router/vectors.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from embedserve.router.errors import ModelTypeError


class Wanted(enum.IntFlag):
    """What an input asks for besides its pooled row (always computed)."""

    NONE = 0
    SPARSE = 1
    MULTI_VECTOR = 2


@dataclass(frozen=True)
class ModelHeads:
    """The bge-m3 heads the backends run (their InfoResponse)."""

    sparse: bool = False
    colbert_dim: int = 0

    @property
    def is_bge_m3(self) -> bool:
        return self.sparse and self.colbert_dim > 0

    def require(self, wanted: Wanted) -> None:
        if Wanted.SPARSE in wanted and not self.sparse:
            raise ModelTypeError("Backend error: Model has no bge-m3 sparse head")
        if Wanted.MULTI_VECTOR in wanted and not self.colbert_dim:
            raise ModelTypeError("Backend error: Model has no bge-m3 multi-vector (ColBERT) head")


@dataclass(frozen=True)
class M3Answer:
    """One input's outputs, before finishing; those not asked for are empty."""

    dense: np.ndarray  # [hidden]
    token_weights: np.ndarray  # [tokens]: each token's lexical weight, 0 for special tokens
    multi_vectors: np.ndarray  # [tokens - 1, colbert_dim]


def pack(dense: np.ndarray, token_weights: np.ndarray | None, multi_vectors: np.ndarray | None) -> np.ndarray:
    """Owner side (router/dispatcher.py): one flat float32 row, the parts in this order."""
    parts = [dense.ravel()]
    if token_weights is not None:
        parts.append(token_weights.ravel())
    if multi_vectors is not None:
        parts.append(multi_vectors.ravel())
    return np.concatenate(parts).astype(np.float32, copy=False)


def unpack(row: np.ndarray, wanted: Wanted, tokens: int, hidden: int, colbert_dim: int) -> M3Answer:
    """Front side: `pack`'s row cut back into its parts, from what the front knows
    (the input's token count, the widths the backends reported)."""
    weights_end = hidden + (tokens if Wanted.SPARSE in wanted else 0)
    vectors = max(tokens - 1, 0) if Wanted.MULTI_VECTOR in wanted else 0
    if row.shape != (weights_end + vectors * colbert_dim,):
        raise RuntimeError(f"a bge-m3 answer of {row.shape} floats does not match {tokens} tokens. This is a bug.")
    return M3Answer(row[:hidden], row[hidden:weights_end], row[weights_end:].reshape(vectors, colbert_dim))


def lexical_weights(token_weights: np.ndarray, input_ids: np.ndarray) -> list[tuple[int, float]]:
    """(token id, weight) for each id with a positive weight, its largest over the
    input's occurrences; ascending id, as /embed_sparse answers SPLADE."""
    positive = token_weights > 0
    ids, weights = input_ids[positive].astype(np.int64), token_weights[positive]
    if len(ids) == 0:
        return []
    order = np.lexsort((-weights, ids))  # by id, largest weight first within an id
    ids, weights = ids[order], weights[order]
    first = np.concatenate(([True], ids[1:] != ids[:-1]))
    return list(zip(ids[first].tolist(), weights[first].tolist()))

