"""Static engine: model2vec models (issue 15, TEI #731), no transformer.

A model2vec folder holds an embedding matrix (`model.safetensors`: `embeddings`,
and after vocabulary quantization `mapping`, token id -> row, and `weights`, one
scale per token id), its `tokenizer.json`, and `config.json` (`model_type:
model2vec`, `normalize`, `max_length`). An input's embedding is the mean of its
tokens' rows, L2-normalized when the config says so: model2vec's `encode`.

Tokenization follows model2vec in the tokenizer workers (tokenizer_pool/encoder.py,
`static_embedding`): no special tokens, the text cut to max_length x the median
vocabulary token length in characters, at most max_length tokens, the unknown
token dropped. An input left with no token arrives as one id past the vocabulary
(the vocabulary size), which counts for nothing here: its vector is zeros,
as in model2vec. numpy only: this process never imports torch.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from safetensors.numpy import load_file

from embedserve.backends.base import EmbedOutput, EngineSpec, ModelBatch
from embedserve.proto.codec import F32Array

logger = logging.getLogger(__name__)

# model2vec's: a small epsilon added to the norm, so zero vectors stay zero.
NORM_EPSILON = 1e-32


class StaticBackend:
    name = "static"
    pooling = "mean"
    # No bge-m3 heads (backends/bgem3.py).
    sparse_head = False
    colbert_dim = 0

    def __init__(self, spec: EngineSpec) -> None:
        if spec.pooling not in ("mean", ""):
            raise ValueError(f"a static embedding model averages its token vectors; pooling {spec.pooling!r} does not apply")
        if spec.dense_layers:
            raise ValueError("Dense modules are not supported with static embedding models")
        # A matrix lookup gains nothing from a GPU: it runs on the CPU wherever it is served.
        self.device = "cpu"
        tensors = load_file(str(spec.model_dir / "model.safetensors"))
        if "embeddings" not in tensors:
            raise ValueError(f"{spec.model_dir / 'model.safetensors'} has no `embeddings` tensor (model2vec's layout)")
        embeddings = tensors["embeddings"]
        if embeddings.ndim != 2:
            raise ValueError(f"`embeddings` must be a matrix, not of shape {embeddings.shape}")
        self.dtype = np.dtype(embeddings.dtype).name
        # float32 rows whatever the stored dtype (int8 models are averaged as they are, as model2vec does).
        self._rows = embeddings.astype(np.float32, copy=False)
        mapping = tensors.get("mapping")
        self._mapping = None if mapping is None else mapping.astype(np.int64).reshape(-1)
        weights = tensors.get("weights")
        self._weights = None if weights is None else weights.astype(np.float32).reshape(-1)
        # Token ids below this are the vocabulary; at or past it, the empty-input placeholder.
        self.vocab_size = len(self._mapping) if self._mapping is not None else len(self._rows)
        if self._weights is not None and len(self._weights) < self.vocab_size:
            raise ValueError(f"`weights` has {len(self._weights)} entries for {self.vocab_size} tokens")
        config = json.loads((spec.model_dir / "config.json").read_text())
        self._normalize = bool(config.get("normalize", False))
        self.hidden_size = int(self._rows.shape[1])
        logger.info("static embedding matrix %s (%s), normalize %s", self._rows.shape, self.dtype, self._normalize)

    @property
    def is_classifier(self) -> bool:
        return False

    @property
    def is_padded(self) -> bool:
        return False

    @property
    def max_batch_size(self) -> int | None:
        return None

    def health(self) -> None:
        return None

    def embed(self, batch: ModelBatch) -> EmbedOutput:
        ids = batch.input_ids.astype(np.int64)
        counted = ids < self.vocab_size
        safe_ids = np.where(counted, ids, 0)
        token_vectors = self._rows[safe_ids if self._mapping is None else self._mapping[safe_ids]]
        if self._weights is not None:
            token_vectors = token_vectors * self._weights[safe_ids][:, None]
        token_vectors[~counted] = 0.0
        starts = batch.cu_seq_lengths[:-1].astype(np.int64)
        # Every sequence has at least one id (the contract), so no reduceat segment is empty.
        sums = np.add.reduceat(token_vectors, starts, axis=0, dtype=np.float64)
        counts = np.add.reduceat(counted.astype(np.int64), starts)
        means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if self._normalize:
            means = means / (np.linalg.norm(means, axis=1, keepdims=True) + NORM_EPSILON)
        pooled: dict[int, F32Array] = {}
        raw: dict[int, F32Array] = {}
        for index, (start, stop) in enumerate(zip(batch.cu_seq_lengths[:-1], batch.cu_seq_lengths[1:])):
            if index in batch.raw_indices:
                raw[index] = token_vectors[start:stop]
            else:
                pooled[index] = means[index]
        return EmbedOutput.assemble(pooled, raw, self.hidden_size, self.hidden_size)

    def predict(self, batch: ModelBatch) -> F32Array:
        raise ValueError("a static embedding model has no classification head")

