"""The contract every engine implements, whatever framework runs it."""

from __future__ import annotations

from dataclasses import dataclass
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

    @classmethod
    def assemble(
        cls, pooled: dict[int, F32Array], raw: dict[int, F32Array], width: int, token_width: int
    ) -> EmbedOutput:
        """From per-sequence results keyed by batch index (chunks finish out of order)."""
        return cls(
            pooled=np.stack([pooled[i] for i in sorted(pooled)]).astype(np.float32, copy=False)
            if pooled
            else np.empty((0, width), np.float32),
            token_rows=np.concatenate([raw[i] for i in sorted(raw)]).astype(np.float32, copy=False)
            if raw
            else np.empty((0, token_width), np.float32),
        )


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
