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

from embedserve.router.errors import EmptyInputError, ModelTypeError, input_validation
from embedserve.router.infer import CallLimits, EncodeOptions, Family, Inference, InferenceResult, ResponseMetadata
from embedserve.router.model_ops import (
    ranked_predictions,
    rerank_order,
    require_classifier,
    require_dense,
    require_embedding,
    require_reranker,
    require_splade,
    require_token_embeddings,
    resolve_prompt,
    sparse_entries,
)
from embedserve.router.rerank_template import CausalRerankPrompt
from embedserve.router.multi_output import ModelHeads, Wanted, lexical_weights, unpack
from embedserve.router.schemas import check_batch_size, check_dimensions, parse_inputs, parse_predict_inputs
from embedserve.router.settings import RouterSettings
from embedserve.router.vectors import finish_embeddings, l2_normalized
from embedserve.tokenizer_pool.pool import Input, TextPair, TokenFormat


@dataclass(frozen=True)
class Truncation:
    # None: the server's --auto-truncate (HTTP's default; gRPC always sends a bool).
    truncate: bool | None
    direction: Literal["right", "left"] = "right"


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
class MultiVectors:
    """Per input, its bge-m3 multi-vectors (ColBERT): [tokens - 1, colbert_dim]."""

    matrices: list[np.ndarray]
    token_counts: list[int]
    metadata: ResponseMetadata
    is_batch: bool


@dataclass(frozen=True)
class HybridEmbeddings:
    """bge-m3's outputs of the same inputs from one forward pass; those not asked for are None."""

    dense: np.ndarray | None  # [inputs, hidden]
    sparse: list[list[tuple[int, float]]] | None
    multi_vectors: list[np.ndarray] | None
    token_counts: list[int]
    metadata: ResponseMetadata
    is_batch: bool


@dataclass(frozen=True)
class Predictions:
    """Per input, (score, label) for every label, best first."""

    ranked: list[list[tuple[float, str]]]
    metadata: ResponseMetadata
    is_batch: bool


@dataclass(frozen=True)
class Similarities:
    """Cosine similarity of the source sentence to each other sentence, in order."""

    scores: np.ndarray
    metadata: ResponseMetadata


@dataclass(frozen=True)
class Ranking:
    """(index, score) of each text, best first."""

    order: list[tuple[int, float]]
    metadata: ResponseMetadata


class Operations:
    """Each method checks the model type first, then the inputs, then runs (TEI's order)."""

    def __init__(
        self, settings: RouterSettings, hidden_size: int, inference: Inference,
        causal_rerank: CausalRerankPrompt | None = None, heads: ModelHeads = ModelHeads(),
    ) -> None:
        self._settings = settings
        self._hidden_size = hidden_size
        self._inference = inference
        # Set when the backend serves a causal-LM reranker (its InfoResponse says so):
        # rerank pairs are framed by its prompt template instead of a tokenizer pair.
        self._causal_rerank = causal_rerank
        self._heads = heads

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
        """/embed_sparse and gRPC EmbedSparse: SPLADE weights, or bge-m3's lexical weights."""
        if self._heads.sparse and self._settings.model_type == "embedding" and not self._settings.is_splade:
            hybrid = await self.embed_hybrid(inputs, truncation, prompt_name, False, Wanted.SPARSE, limits)
            assert hybrid.sparse is not None
            return SparseEmbeddings(hybrid.sparse, hybrid.metadata, hybrid.is_batch)
        require_splade(self._settings)
        parsed, is_batch = self._parsed(inputs)
        result = await self._run(parsed, is_batch, truncation, prompt_name, limits, "embed")
        return SparseEmbeddings([sparse_entries(row) for row in result.rows], result.metadata, is_batch)

    async def embed_multi_vector(
        self, inputs: str | list[Any], truncation: Truncation, prompt_name: str | None, normalize: bool,
        limits: CallLimits,
    ) -> MultiVectors:
        """/embed_multi_vector and /v1/embeddings' multi_vector type: bge-m3's ColBERT vectors."""
        hybrid = await self.embed_hybrid(inputs, truncation, prompt_name, normalize, Wanted.MULTI_VECTOR, limits)
        assert hybrid.multi_vectors is not None
        return MultiVectors(hybrid.multi_vectors, hybrid.token_counts, hybrid.metadata, hybrid.is_batch)

    async def embed_hybrid(
        self, inputs: str | list[Any], truncation: Truncation, prompt_name: str | None, normalize: bool,
        wanted: Wanted, limits: CallLimits, *, dense: bool = False,
    ) -> HybridEmbeddings:
        """/embed_hybrid: bge-m3's dense row (with `dense`), lexical weights and
        multi-vectors, whichever `wanted` asks, from one forward pass per batch.
        `normalize` applies to the dense rows and to each multi-vector."""
        require_embedding(self._settings)
        self._heads.require(wanted)
        parsed, is_batch = self._parsed(inputs)
        result = await self._run(parsed, is_batch, truncation, prompt_name, limits, "embed", wanted=wanted)
        heads = self._heads
        answers = [unpack(row, wanted, tokens, self._hidden_size, heads.colbert_dim)
                   for row, tokens in zip(result.rows, result.token_counts)]
        sparse = multi_vectors = None
        if Wanted.SPARSE in wanted:
            sparse = [lexical_weights(a.token_weights, ids) for a, ids in zip(answers, result.input_ids)]
        if Wanted.MULTI_VECTOR in wanted:
            multi_vectors = [l2_normalized(a.multi_vectors) if normalize else a.multi_vectors for a in answers]
        vectors = finish_embeddings([a.dense for a in answers], normalize, None) if dense else None
        return HybridEmbeddings(vectors, sparse, multi_vectors, result.token_counts, result.metadata, is_batch)

    async def similarity(
        self, source: str, sentences: list[str], truncation: Truncation, prompt_name: str | None, limits: CallLimits
    ) -> Similarities:
        """/similarity (HTTP only, as in TEI): the source and the sentences embedded in one call."""
        settings = self._settings
        require_embedding(settings)
        if not sentences:
            raise EmptyInputError("`inputs.sentences` cannot be empty")
        check_batch_size(len(sentences) + 1, settings.max_client_batch_size)
        options = self._encode_options(truncation, resolve_prompt(settings, prompt_name))
        if not source or not all(sentences):
            raise EmptyInputError()
        texts: list[Input] = [source, *sentences]
        result = await self._inference.run(
            texts, options, family="embed", method="batch",
            limits=limits,
        )
        vectors = np.stack(result.rows).astype(np.float64)
        source_vector, others = vectors[0], vectors[1:]
        denominators = np.linalg.norm(others, axis=1) * np.linalg.norm(source_vector)
        denominators[denominators == 0] = 1.0
        return Similarities((others @ source_vector / denominators).astype(np.float32), result.metadata)

    async def predict(
        self, inputs: str | list[Any], truncation: Truncation, raw_scores: bool, limits: CallLimits
    ) -> Predictions:
        """/predict, gRPC Predict and PredictPair: a text, a pair, or a batch of either.

        TEI applies the server's default prompt to single texts; a pair then fails.
        """
        require_classifier(self._settings)
        if self._causal_rerank is not None:
            raise ModelTypeError("Backend error: a causal-LM reranker answers /rerank only: its prompt template "
                                 "needs a query and a document")
        parsed, is_batch = parse_predict_inputs(inputs)
        check_batch_size(len(parsed), self._settings.max_client_batch_size)
        options = self._encode_options(truncation, self._settings.default_prompt)
        result = await self._inference.run(
            parsed, options, family="predict", method="batch" if is_batch else "single",
            limits=limits,
        )
        labels = self._settings.labels()
        ranked = [ranked_predictions(logits, raw_scores, labels) for logits in result.rows]
        return Predictions(ranked, result.metadata, is_batch)

    async def rerank(
        self, pairs: list[tuple[str, str]], truncation: Truncation, raw_scores: bool, limits: CallLimits, *,
        is_batch: bool, instruction: str | None = None, texts_field: str = "texts",
    ) -> Ranking:
        """/rerank, /v1/rerank, gRPC Rerank and RerankStream: (query, text) pairs, scored
        by the first logit. `is_batch` is how the transport counts the call in
        te_request_count (HTTP: always a batch; gRPC: a batch unless one text).
        `instruction` overrides a causal reranker's default; `texts_field` names the
        texts in the empty-input error (/v1/rerank's are `documents`)."""
        settings = self._settings
        require_reranker(settings)
        causal = self._causal_rerank
        if instruction is not None and causal is None:
            raise input_validation("`instruction` is only available for causal-LM rerankers (--reranker-template)")
        if not pairs:
            raise EmptyInputError(f"`{texts_field}` cannot be empty")
        check_batch_size(len(pairs), settings.max_client_batch_size)
        if not all(query and text for query, text in pairs):
            raise EmptyInputError()
        inputs: list[Input]
        if causal is None:
            inputs = [TextPair(query, text) for query, text in pairs]
        else:
            inputs = [causal.frame(instruction, query, text) for query, text in pairs]
        result = await self._inference.run(
            inputs, self._encode_options(truncation, None), family="predict",
            method="batch" if is_batch else "single",
            limits=limits,
        )
        order = rerank_order(np.stack([row[0] for row in result.rows]), raw_scores)
        return Ranking(order, result.metadata)

    async def tokenize(
        self, inputs: list[str], add_special_tokens: bool, prompt_name: str | None, token_format: TokenFormat
    ) -> list[bytes]:
        """/tokenize and gRPC Tokenize: each input's tokens, written by a worker in
        `token_format` (no permits and no queue, as in TEI)."""
        if not inputs:
            raise EmptyInputError("`inputs` cannot be empty")
        check_batch_size(len(inputs), self._settings.max_client_batch_size)
        prompt = resolve_prompt(self._settings, prompt_name)
        return await self._inference.tokenize(inputs, add_special_tokens, prompt, token_format)

    async def decode(self, id_lists: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """/decode and gRPC Decode: each id list back to text."""
        if not id_lists or not all(id_lists):
            raise EmptyInputError("`ids` cannot be empty")
        check_batch_size(len(id_lists), self._settings.max_client_batch_size)
        return await self._inference.decode(id_lists, skip_special_tokens)

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
        wanted: Wanted = Wanted.NONE,
    ) -> InferenceResult:
        options = self._encode_options(truncation, resolve_prompt(self._settings, prompt_name))
        return await self._inference.run(
            inputs, options, raw=raw, family=family, method="batch" if is_batch else "single",
            limits=limits, wanted=wanted,
        )

    def _encode_options(self, truncation: Truncation, prompt: str | None) -> EncodeOptions:
        truncate = self._settings.auto_truncate if truncation.truncate is None else truncation.truncate
        return EncodeOptions(truncate=truncate, direction=truncation.direction, prompt=prompt)
