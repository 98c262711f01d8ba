"""The in-process sentence-transformers baseline (length-sorted batches)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.load import Throughput

BATCH_SIZE = 32
WARMUP_TEXTS = 8


@dataclass
class BaselineResult(Throughput):
    texts: int
    seconds: float
    tokens: int
    embeddings: np.ndarray  # kept to check the server's vectors against


def run_baseline(model_dir: Path, texts: list[str], backend: str = "torch") -> BaselineResult:
    """`backend` is sentence-transformers' own: "torch" or "onnx" (ONNX Runtime,
    exported on the fly when the model ships no ONNX file)."""
    # Imported here so --skip-baseline runs never pay for loading torch in this process.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", backend=backend)
    try:
        # Count what the model actually sees: special tokens included, truncated
        # like encode() truncates, so tokens/s matches the server's x-compute-tokens.
        encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        # The first call pays for lazy init (thread pools, kernels); keep it out of the timing.
        model.encode(texts[:WARMUP_TEXTS], batch_size=BATCH_SIZE)
        started = time.perf_counter()
        embeddings = model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True)
        seconds = time.perf_counter() - started
    finally:
        # The server's processes need the cores and memory this model holds.
        del model
        gc.collect()
    return BaselineResult(texts=len(texts), seconds=seconds, tokens=tokens, embeddings=np.asarray(embeddings))
