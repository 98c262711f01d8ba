"""Request bodies (msgspec structs) and the decoding rules shared by every route."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from embedserve.router.errors import BatchSizeError, EmptyInputError, MalformedRequestError, ValidationError, input_validation
from embedserve.router.quantize import Precision
from embedserve.tokenizer_pool.pool import Input, TextPair

TruncationDirection = Literal["right", "left", "Right", "Left"]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
MAX_TOKEN_ID = 2**32 - 1


class EmbedRequest(msgspec.Struct, kw_only=True):
    inputs: str | list[Any]
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "right"
    prompt_name: str | None = None
    normalize: bool = True
    dimensions: NonNegative | None = None
    # embedserve's own (TEI #219): sentence-transformers' quantize_embeddings precisions (router/quantize.py).
    precision: Precision = "float32"
    # int8/uint8 only: [mins, maxs] per output dimension; absent: this request's own embeddings.
    ranges: list[list[float]] | None = None


class EmbedAllRequest(msgspec.Struct, kw_only=True):
    inputs: str | list[Any]
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "right"
    prompt_name: str | None = None


class EmbedSparseRequest(EmbedAllRequest, kw_only=True):
    pass


class EmbedMultiVectorRequest(EmbedAllRequest, kw_only=True):
    normalize: bool = True


# bge-m3's outputs by name (router/multi_output.py).
HybridOutput = Literal["dense", "sparse", "multi_vector"]
HYBRID_OUTPUTS: tuple[HybridOutput, ...] = ("dense", "sparse", "multi_vector")


class EmbedHybridRequest(EmbedMultiVectorRequest, kw_only=True):
    outputs: list[HybridOutput] = msgspec.field(default_factory=lambda: list(HYBRID_OUTPUTS))


class PredictRequest(msgspec.Struct, kw_only=True):
    inputs: str | list[Any]
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "right"
    raw_scores: bool = False


class RerankRequest(msgspec.Struct, kw_only=True):
    query: str
    texts: list[str]
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "right"
    raw_scores: bool = False
    return_text: bool = False
    # Causal-LM rerankers only (--reranker-template): the prompt's instruction; None: the server's.
    instruction: str | None = None


class RerankDocument(msgspec.Struct, kw_only=True):
    """Cohere's and Jina's object form of a document; other keys are ignored."""

    text: str


class V1RerankRequest(msgspec.Struct, kw_only=True):
    """/v1/rerank in Jina's shape (Cohere's request is the same): `model` is accepted
    and ignored, as on /v1/embeddings; so are fields neither serves here
    (`max_chunks_per_doc`, `max_tokens_per_doc`, `rank_fields`)."""

    query: str
    documents: list[str | RerankDocument]
    model: str | None = None
    top_n: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Jina's default (Cohere's v1 API defaulted to false).
    return_documents: bool = True
    # Causal-LM rerankers only, as on /rerank.
    instruction: str | None = None


class SimilarityInputs(msgspec.Struct, kw_only=True):
    source_sentence: str
    sentences: list[str]


class SimilarityParameters(msgspec.Struct, kw_only=True):
    truncate: bool | None = None
    truncation_direction: TruncationDirection = "right"
    prompt_name: str | None = None


class SimilarityRequest(msgspec.Struct, kw_only=True):
    inputs: SimilarityInputs
    parameters: SimilarityParameters | None = None


class TokenizeRequest(msgspec.Struct, kw_only=True):
    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None


class DecodeRequest(msgspec.Struct, kw_only=True):
    ids: list[Any]
    skip_special_tokens: bool = True


class VertexRequest(msgspec.Struct, kw_only=True):
    instances: list[dict[str, Any]]


class OpenAIEmbeddingsRequest(msgspec.Struct, kw_only=True):
    input: str | list[Any]
    model: str | None = None
    user: str | None = None
    # float and base64 are OpenAI's; the quantized ones (Azure AI Inference's names) answer lists of ints.
    encoding_format: Literal["float", "base64", "int8", "uint8", "binary", "ubinary"] = "float"
    dimensions: NonNegative | None = None
    # As /embed's; with encoding_format base64 the quantized bytes are what is encoded.
    precision: Precision | None = None
    ranges: list[list[float]] | None = None
    # Ours, not OpenAI's: "multi_vector" answers bge-m3's multi-vectors, a list of vectors per input.
    embedding_type: Literal["dense", "multi_vector"] = "dense"


T = TypeVar("T")


def decode_body(body: bytes, schema: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"Failed to deserialize the JSON body into the target type: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MalformedRequestError(f"Failed to parse the request body as JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise MalformedRequestError(f"Failed to parse the request body as JSON: invalid UTF-8: {exc}") from exc
    except RecursionError as exc:
        raise MalformedRequestError("Failed to parse the request body as JSON: nested too deeply") from exc


def parse_inputs(raw: str | list[Any]) -> tuple[list[Input], bool]:
    """TEI's untagged `Input`: a string, a list of ids, or a batch of either.

    Returns the inputs and whether the request was a batch.
    """
    if isinstance(raw, str):
        if not raw:
            raise EmptyInputError()
        return [raw], False
    if not raw:
        raise EmptyInputError()
    if all(_is_token_id(item) for item in raw):
        return [list(raw)], False
    batch: list[Input] = []
    for item in raw:
        if isinstance(item, str):
            if not item:
                raise EmptyInputError()
            batch.append(item)
        elif isinstance(item, list) and all(_is_token_id(i) for i in item):
            if not item:
                raise EmptyInputError()
            batch.append(list(item))
        else:
            raise ValidationError(
                "Failed to deserialize the JSON body into the target type: "
                "inputs must be a string, a list of token ids, or a list of either"
            )
    return batch, True


def parse_predict_inputs(raw: str | list[Any]) -> tuple[list[Input], bool]:
    """TEI's `PredictInput`: a text, a pair `[a, b]`, or a batch of `[a]` / `[a, b]`."""
    if isinstance(raw, str):
        if not raw:
            raise EmptyInputError()
        return [raw], False
    if not raw:
        raise EmptyInputError()
    if all(isinstance(item, str) for item in raw):
        return [_single_or_pair(raw)], False
    if all(isinstance(item, list) for item in raw):
        return [_single_or_pair(item) for item in raw], True
    raise ValidationError(
        "Failed to deserialize the JSON body into the target type: inputs must be a string, "
        "a list of one or two strings, or a list of such lists"
    )


def _single_or_pair(items: list[Any]) -> Input:
    if not all(isinstance(item, str) for item in items):
        raise ValidationError("Failed to deserialize the JSON body into the target type: texts must be strings")
    if len(items) == 0 or any(not item for item in items):
        raise EmptyInputError()
    if len(items) == 1:
        return str(items[0])
    if len(items) == 2:
        return TextPair(items[0], items[1])
    raise ValidationError(
        f"Failed to deserialize the JSON body into the target type: a pair has 2 texts, not {len(items)}"
    )


def parse_decode_ids(raw: list[Any]) -> tuple[list[list[int]], bool]:
    if not raw:
        raise EmptyInputError("`ids` cannot be empty")
    if all(_is_token_id(i) for i in raw):
        return [list(raw)], False
    if all(isinstance(item, list) and all(_is_token_id(i) for i in item) for item in raw):
        if any(not item for item in raw):
            raise EmptyInputError("`ids` cannot be empty")
        return [list(item) for item in raw], True
    raise ValidationError("Failed to deserialize the JSON body into the target type: ids must be token ids")


def check_batch_size(count: int, max_client_batch_size: int) -> None:
    if count > max_client_batch_size:
        raise BatchSizeError(f"batch size {count} > maximum allowed batch size {max_client_batch_size}")


def check_dimensions(dimensions: int | None, hidden_size: int) -> None:
    if dimensions is None:
        return
    if dimensions == 0:
        raise input_validation("`dimensions` should be positive")
    if dimensions > hidden_size:
        raise input_validation("`dimensions` should be smaller than the maximum embedding dimension.")


def _is_token_id(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKEN_ID
