"""The contract every engine implements, whatever framework runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from embedserve.proto.codec import F32Array, U32Array


Activation = Literal["identity", "tanh", "relu", "sigmoid"]


@dataclass(frozen=True)
class DenseSpec:
    """A sentence-transformers Dense module: activation(x @ weight.T + bias)."""

    path: Path  # the module's folder: model.safetensors or pytorch_model.bin
    in_features: int
    out_features: int
    bias: bool
    activation: Activation


@dataclass(frozen=True)
class CausalRerankSpec:
    """A ...ForCausalLM checkpoint served as a reranker (BackendConfig.causal_reranker):
    Predict answers logit(yes) - logit(no) at each sequence's last token."""

    template: str  # the router's prompt template, reported in InfoResponse
    instruction: str  # its default instruction, reported alike
    yes_token: str
    no_token: str


@dataclass(frozen=True)
class EngineSpec:
    """What every engine is built from (BackendConfig, minus the transport)."""

    model_dir: Path
    device: str  # cpu or cuda (the process sees its one GPU as cuda:0)
    dtype: str  # empty: the engine's default for the device
    pooling: str  # cls, mean, last_token, splade
    cache_dir: Path  # where exports and conversions are kept between starts
    cache_max_bytes: int = 0  # the cache's size cap; 0: none
    dense_layers: tuple[DenseSpec, ...] = ()  # applied in order to pooled rows
    # --trust-remote-code: only then may code from the model directory be imported.
    trust_remote_code: bool = False
    # Set: the checkpoint is a causal LM served as a reranker (torch engine only).
    causal_rerank: CausalRerankSpec | None = None
    # The router's --max-batch-tokens: the largest CUDA-graph bucket; 0: not known.
    max_batch_tokens: int = 0


@dataclass(frozen=True)
class ModelBatch:
    """A decoded batch: sequences concatenated without padding."""

    input_ids: U32Array
    token_type_ids: U32Array
    position_ids: U32Array
    cu_seq_lengths: U32Array
    max_length: int
    # Indices of sequences that want per-token vectors instead of a pooled one.
    raw_indices: frozenset[int] = frozenset()
    # Per sequence, the first token mean pooling counts; None: all from the first.
    pool_starts: U32Array | None = None
    # Sequences that also want bge-m3's lexical weights / multi-vectors (backends/bgem3.py).
    sparse_indices: frozenset[int] = frozenset()
    colbert_indices: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        return len(self.cu_seq_lengths) - 1

    @property
    def lengths(self) -> U32Array:
        lengths: U32Array = np.diff(self.cu_seq_lengths)
        return lengths

    def cost(self, padded: bool) -> int:
        """Tokens this batch costs: max_length x size when padded, else the token sum."""
        return self.max_length * self.size if padded else len(self.input_ids)


@dataclass(frozen=True)
class EmbedOutput:
    pooled: F32Array  # [sequences not raw, width], batch order
    token_rows: F32Array  # [tokens of the raw sequences, hidden], batch order
    # bge-m3 heads (backends/bgem3.py), for ModelBatch.sparse_indices / colbert_indices:
    sparse_weights: F32Array = field(default_factory=lambda: np.empty(0, np.float32))  # [their tokens]
    # [tokens - 1 of each of those sequences, colbert_dim], batch order
    colbert_rows: F32Array = field(default_factory=lambda: np.empty((0, 0), np.float32))

    @classmethod
    def assemble(
        cls, pooled: dict[int, F32Array], raw: dict[int, F32Array], width: int, token_width: int,
        sparse: dict[int, F32Array] | None = None, colbert: dict[int, F32Array] | None = None, colbert_dim: int = 0,
    ) -> EmbedOutput:
        """From per-sequence results keyed by batch index (chunks finish out of order)."""
        return cls(
            pooled=_stacked(pooled, (0, width)),
            token_rows=_joined(raw, (0, token_width)),
            sparse_weights=_joined(sparse or {}, (0,)),
            colbert_rows=_joined(colbert or {}, (0, colbert_dim)),
        )


def _stacked(rows: dict[int, F32Array], empty: tuple[int, ...]) -> F32Array:
    if not rows:
        return np.empty(empty, np.float32)
    return np.stack([rows[i] for i in sorted(rows)]).astype(np.float32, copy=False)


def _joined(parts: dict[int, F32Array], empty: tuple[int, ...]) -> F32Array:
    if not parts:
        return np.empty(empty, np.float32)
    return np.concatenate([parts[i] for i in sorted(parts)]).astype(np.float32, copy=False)


class Backend(Protocol):
    """An engine that runs forward passes for one model on one device.

    Methods are called from a single worker thread, one at a time.
    Variants, by name (`backends/engines.py`): torch (`TorchBackend`), onnx
    (`OnnxBackend`), python (`RemoteCodeBackend`, trust_remote_code), static
    (`StaticBackend`, model2vec).
    """

    name: str
    device: str
    dtype: str
    pooling: str
    hidden_size: int
    # bge-m3 heads the engine runs (backends/bgem3.py): lexical weights, and the
    # multi-vector width (0: none).
    sparse_head: bool
    colbert_dim: int

    @property
    def is_classifier(self) -> bool:
        """Answers Predict (logits) rather than Embed."""

    @property
    def is_padded(self) -> bool: ...

    @property
    def max_batch_size(self) -> int | None: ...

    def health(self) -> None: ...

    def embed(self, batch: ModelBatch) -> EmbedOutput: ...

    def predict(self, batch: ModelBatch) -> F32Array: ...
