"""Torch engine: transformers models on CPU or one CUDA device, SDPA attention."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from backends.base import EmbedOutput, ModelBatch
from proto.codec import F32Array

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
POOLINGS = ("cls", "mean", "last_token", "splade")

# A padded chunk may waste at most this share of its tokens on padding; the
# backend splits a batch into length-sorted chunks to stay under it.
MAX_PADDING_WASTE = 0.2
# Chunks above this many padded tokens gain nothing on CPU and cost cache misses.
CPU_CHUNK_TOKENS = 8192
# 1024 tokens x a 30k vocabulary of float32 logits is already ~125 MB.
SPLADE_CHUNK_TOKENS = 1024


class TorchBackend:
    name = "torch"

    def __init__(self, model_dir: Path, device: str, dtype: str, pooling: str) -> None:
        self.device = "cuda:0" if device == "cuda" else "cpu"
        if not dtype:
            dtype = "float16" if self.device.startswith("cuda") else "float32"
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported by the torch backend ({', '.join(DTYPES)})")
        if self.device == "cpu" and dtype != "float32":
            raise ValueError(f"dtype {dtype} needs a GPU; the torch backend on CPU runs float32")
        self.dtype = dtype
        if self.device == "cpu":
            torch.set_num_threads(len(os.sched_getaffinity(0)))

        config = AutoConfig.from_pretrained(model_dir)
        architectures = config.architectures or []
        self._is_classifier = any(a.endswith("Classification") for a in architectures)
        if not self._is_classifier and pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not supported by the torch backend ({', '.join(POOLINGS)})")
        self.pooling = pooling

        started = time.monotonic()
        weights_mb = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 1e6 or sum(
            f.stat().st_size for f in model_dir.glob("*.bin")
        ) / 1e6
        logger.info("loading weights from %s (%.0f MB, %s, %s)", model_dir, weights_mb, self.device, dtype)
        model_cls: type[Any]
        if self._is_classifier:
            model_cls = AutoModelForSequenceClassification
        elif pooling == "splade":
            model_cls = AutoModelForMaskedLM
        else:
            model_cls = AutoModel
        self._model = model_cls.from_pretrained(
            model_dir, dtype=DTYPES[dtype], attn_implementation="sdpa"
        )
        self._model.eval().to(self.device)
        logger.info("weights loaded in %.1fs", time.monotonic() - started)
        # Width of a pooled row: SPLADE pools over the vocabulary.
        self.hidden_size = int(config.vocab_size if pooling == "splade" else config.hidden_size)
        self._uses_token_types = int(getattr(config, "type_vocab_size", 0) or 0) > 1
        self._token_width = int(config.hidden_size)

    @property
    def is_classifier(self) -> bool:
        return self._is_classifier

    @property
    def is_padded(self) -> bool:
        return True

    @property
    def max_batch_size(self) -> int | None:
        return None

    def health(self) -> None:
        if self.device.startswith("cuda"):
            torch.ones(2, 2, device=self.device).sum().item()

    @torch.inference_mode()
    def embed(self, batch: ModelBatch) -> EmbedOutput:
        if self._is_classifier:
            raise ValueError("model is a classifier: use Predict")
        if batch.raw_indices and self.pooling == "splade":
            raise ValueError("`embed_all` is not available for SPLADE models")
        pooled, raw = self._run(batch, self._pool)
        width = pooled[0].shape[-1] if pooled else self.hidden_size
        return EmbedOutput(
            pooled=np.stack(pooled) if pooled else np.empty((0, width), np.float32),
            token_rows=np.concatenate(raw) if raw else np.empty((0, self._token_width), np.float32),
        )

    @torch.inference_mode()
    def predict(self, batch: ModelBatch) -> F32Array:
        if not self._is_classifier:
            raise ValueError("model is not a classifier: use Embed")
        if batch.raw_indices:
            raise ValueError("raw token outputs are not available for classifiers")
        pooled, _ = self._run(batch, lambda out, mask: out.logits)
        return np.stack(pooled)

    def _run(self, batch: ModelBatch, head: Callable[[Any, torch.Tensor], torch.Tensor]) -> tuple[list[F32Array], list[F32Array]]:
        """Forward the batch in length-sorted chunks; returns pooled rows and raw
        token matrices, each in batch order."""
        lengths = batch.lengths
        starts = batch.cu_seq_lengths[:-1]
        results: list[F32Array | None] = [None] * batch.size
        for chunk in _length_sorted_chunks(lengths, self._chunk_tokens()):
            max_len = int(lengths[chunk].max())
            ids = np.zeros((len(chunk), max_len), dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros_like(ids)
            for row, seq in enumerate(chunk):
                start, length = int(starts[seq]), int(lengths[seq])
                ids[row, :length] = batch.input_ids[start : start + length]
                types[row, :length] = batch.token_type_ids[start : start + length]
                mask[row, :length] = 1
            inputs = {
                "input_ids": torch.from_numpy(ids).to(self.device),
                "attention_mask": torch.from_numpy(mask).to(self.device),
            }
            if self._uses_token_types:
                inputs["token_type_ids"] = torch.from_numpy(types).to(self.device)
            output = self._model(**inputs)
            pooled_rows = [row for row, seq in enumerate(chunk) if seq not in batch.raw_indices]
            if pooled_rows:
                values = head(output, inputs["attention_mask"]).float().cpu().numpy()
                for row in pooled_rows:
                    results[chunk[row]] = values[row]
            if len(pooled_rows) < len(chunk):
                hidden = output.last_hidden_state.float().cpu().numpy()
                for row, seq in enumerate(chunk):
                    if seq in batch.raw_indices:
                        results[seq] = hidden[row, : int(lengths[seq])]
        pooled = [r for i, r in enumerate(results) if i not in batch.raw_indices and r is not None]
        raw = [r for i, r in enumerate(results) if i in batch.raw_indices and r is not None]
        return pooled, raw

    def _pool(self, output: Any, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "splade":
            # max over real tokens of log(1 + relu(logits)); padding contributes 0.
            activations = torch.log1p(torch.relu(output.logits.float())) * mask.unsqueeze(-1)
            return activations.max(dim=1).values
        hidden: torch.Tensor = output.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * weights).sum(dim=1, dtype=torch.float32)
            return summed / weights.sum(dim=1, dtype=torch.float32).clamp(min=1.0)
        last = mask.sum(dim=1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _chunk_tokens(self) -> int | None:
        if self.pooling == "splade":
            return SPLADE_CHUNK_TOKENS  # logits are tokens x vocabulary floats
        return CPU_CHUNK_TOKENS if self.device == "cpu" else None


def _length_sorted_chunks(lengths: np.ndarray, max_chunk_tokens: int | None) -> Iterator[list[int]]:
    """Group sequence indices by length so that padding wastes little compute."""
    order = np.argsort(lengths, kind="stable")
    chunk: list[int] = []
    token_sum = 0
    for seq in order.tolist():
        length = int(lengths[seq])
        padded = length * (len(chunk) + 1)  # ascending order: this one is the longest
        too_wasteful = padded > (token_sum + length) * (1 + MAX_PADDING_WASTE)
        too_big = max_chunk_tokens is not None and padded > max_chunk_tokens
        if chunk and (too_wasteful or too_big):
            yield chunk
            chunk, token_sum = [], 0
        chunk.append(seq)
        token_sum += length
    if chunk:
        yield chunk
