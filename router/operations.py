"""One method per operation, shared by HTTP and gRPC (TEI's core/src/infer.rs).

A transport decodes its request into the arguments below, calls one method and
encodes what comes back. Everything between lives here, once: the model-type
check, the client batch limit, `dimensions`, the prompt, the server's default
truncation, the run through permits, tokenizer and queue, and the finishing
(Matryoshka cut, normalization). Errors are router errors; each transport maps
them to its own status (HTTP in router/app.py, gRPC in grpc_api/servicers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from router.infer import EncodeOptions, Family, Inference, InferenceResult, ResponseMetadata
from router.model_ops import (
    ranked_predictions,
    require_classifier,
    require_dense,
    require_splade,
    require_token_embeddings,
    resolve_prompt,
    sparse_entries,
)
from router.schemas import check_batch_size, check_dimensions, parse_inputs, parse_predict_inputs
from router.settings import RouterSettings
from router.vectors import finish_embeddings
from tokenizer_pool.pool import Input


@dataclass(frozen=True)
class Truncation:
    # None: the server's --auto-truncate (HTTP's default; gRPC always sends a bool).
    truncate: bool | None
    direction: Literal["right", "left"] = "right"


@dataclass(frozen=True)
class CallLimits:
    """How the transport wants the call run."""

    # Queue for permits instead of failing with 429 (gRPC stream items).
    wait_for_permit: bool = False
    # perf_counter() instant after which inputs still queued fail; None: none.
    deadline: float | None = None


@dataclass(frozen=True)
class PooledEmbeddings:
    vectors: np.ndarray
    token_counts: list[int]
    metadata: ResponseMetadata
    is_batch: bool


@dataclass(frozen=True)
class TokenEmbeddings:
    """One [tokens, hidden] matrix per input."""

    matrices: list[np.ndarray]
    metadata: ResponseMetadata
    is_batch: bool


@dataclass(frozen=True)
class SparseEmbeddings:
    """Per input, its non-zero SPLADE weights as (index, value), ascending index."""

    weights: list[list[tuple[int, float]]]
    metadata: ResponseMetadata
    is_batch: bool


@dataclass(frozen=True)
class Predictions:
    """Per input, (score, label) for every label, best first."""

    ranked: list[list[tuple[float, str]]]
    metadata: ResponseMetadata
    is_batch: bool


class Operations:
    """Each method checks the model type first, then the inputs, then runs (TEI's order)."""

    def __init__(self, settings: RouterSettings, hidden_size: int, inference: Inference) -> None:
        self._settings = settings
        self._hidden_size = hidden_size
        self._inference = inference

    async def embed_pooled(
        self,
        inputs: str | list[Any],
        truncation: Truncation,
        prompt_name: str | None,
        normalize: bool,
        dimensions: int | None,
        limits: CallLimits,
    ) -> PooledEmbeddings:
        """/embed, /v1/embeddings and gRPC Embed: one pooled vector per input.

        `inputs` as the client sent it (TEI's untagged `Input`: a text, ids, or a
        batch of either); a gRPC message's single text is a plain string.
        """
        require_dense(self._settings, normalize)
        parsed, is_batch = self._parsed(inputs)
        check_dimensions(dimensions, self._hidden_size)
        result = await self._run(parsed, is_batch, truncation, prompt_name, limits, "embed")
        vectors = finish_embeddings(result.rows, normalize, dimensions)
        return PooledEmbeddings(vectors, result.token_counts, result.metadata, is_batch)

    async def embed_all(
        self, inputs: str | list[Any], truncation: Truncation, prompt_name: str | None, limits: CallLimits
    ) -> TokenEmbeddings:
        """/embed_all and gRPC EmbedAll: every token's vector, unpooled."""
        require_token_embeddings(self._settings)
        parsed, is_batch = self._parsed(inputs)
        result = await self._run(parsed, is_batch, truncation, prompt_name, limits, "embed", raw=True)
        return TokenEmbeddings(result.rows, result.metadata, is_batch)

    async def embed_sparse(
        self, inputs: str | list[Any], truncation: Truncation, prompt_name: str | None, limits: CallLimits
    ) -> SparseEmbeddings:
        """/embed_sparse and gRPC EmbedSparse: SPLADE weights."""
        require_splade(self._settings)
        parsed, is_batch = self._parsed(inputs)
        result = await self._run(parsed, is_batch, truncation, prompt_name, limits, "embed")
        return SparseEmbeddings([sparse_entries(row) for row in result.rows], result.metadata, is_batch)

    async def predict(
        self, inputs: str | list[Any], truncation: Truncation, raw_scores: bool, limits: CallLimits
    ) -> Predictions:
        """/predict, gRPC Predict and PredictPair: a text, a pair, or a batch of either.

        TEI applies the server's default prompt to single texts; a pair then fails.
        """
        require_classifier(self._settings)
        parsed, is_batch = parse_predict_inputs(inputs)
        check_batch_size(len(parsed), self._settings.max_client_batch_size)
        options = self._encode_options(truncation, self._settings.default_prompt)
        result = await self._inference.run(
            parsed, options, family="predict", method="batch" if is_batch else "single",
            wait_for_permit=limits.wait_for_permit, deadline=limits.deadline,
        )
        labels = self._settings.labels()
        ranked = [ranked_predictions(logits, raw_scores, labels) for logits in result.rows]
        return Predictions(ranked, result.metadata, is_batch)

    def _parsed(self, inputs: str | list[Any]) -> tuple[list[Input], bool]:
        parsed, is_batch = parse_inputs(inputs)
        check_batch_size(len(parsed), self._settings.max_client_batch_size)
        return parsed, is_batch

    async def _run(
        self,
        inputs: list[Input],
        is_batch: bool,
        truncation: Truncation,
        prompt_name: str | None,
        limits: CallLimits,
        family: Family,
        raw: bool = False,
    ) -> InferenceResult:
        options = self._encode_options(truncation, resolve_prompt(self._settings, prompt_name))
        return await self._inference.run(
            inputs, options, raw=raw, family=family, method="batch" if is_batch else "single",
            wait_for_permit=limits.wait_for_permit, deadline=limits.deadline,
        )

    def _encode_options(self, truncation: Truncation, prompt: str | None) -> EncodeOptions:
        truncate = self._settings.auto_truncate if truncation.truncate is None else truncation.truncate
        return EncodeOptions(truncate=truncate, direction=truncation.direction, prompt=prompt)
