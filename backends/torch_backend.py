"""Torch engine: transformers models on CPU or one CUDA device, SDPA attention."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from backends.base import ModelBatch
from proto.codec import F32Array

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
POOLINGS = ("cls", "mean", "last_token")

# A padded chunk may waste at most this share of its tokens on padding; the
# backend splits a batch into length-sorted chunks to stay under it.
MAX_PADDING_WASTE = 0.2
# Chunks above this many padded tokens gain nothing on CPU and cost cache misses.
CPU_CHUNK_TOKENS = 8192


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
        model_cls = AutoModelForSequenceClassification if self._is_classifier else AutoModel
        self._model = model_cls.from_pretrained(
            model_dir, dtype=DTYPES[dtype], attn_implementation="sdpa"
        )
        self._model.eval().to(self.device)
        logger.info("weights loaded in %.1fs", time.monotonic() - started)
        self.hidden_size = int(config.hidden_size)
        self._uses_token_types = int(getattr(config, "type_vocab_size", 0) or 0) > 1

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
    def embed(self, batch: ModelBatch) -> F32Array:
        if self._is_classifier:
            raise ValueError("model is a classifier: use Predict")
        return self._run(batch, self._pool)

    @torch.inference_mode()
    def predict(self, batch: ModelBatch) -> F32Array:
        if not self._is_classifier:
            raise ValueError("model is not a classifier: use Embed")
        return self._run(batch, lambda out, mask: out.logits)

    def _run(self, batch: ModelBatch, head: object) -> F32Array:
        lengths = batch.lengths
        starts = batch.cu_seq_lengths[:-1]
        rows: list[F32Array] = [np.empty(0, np.float32)] * batch.size
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
            result = head(output, inputs["attention_mask"])  # type: ignore[operator]
            values = result.float().cpu().numpy()
            for row, seq in enumerate(chunk):
                rows[seq] = values[row]
        return np.stack(rows).astype(np.float32, copy=False)

    def _pool(self, output: object, mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = output.last_hidden_state  # type: ignore[attr-defined]
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * weights).sum(dim=1, dtype=torch.float32)
            return summed / weights.sum(dim=1, dtype=torch.float32).clamp(min=1.0)
        last = mask.sum(dim=1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _chunk_tokens(self) -> int | None:
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
