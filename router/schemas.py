"""Request bodies (msgspec structs) and the decoding rules shared by every route."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from router.errors import BatchSizeError, EmptyInputError, MalformedRequestError, ValidationError, input_validation
from tokenizer_pool.pool import Input

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


class OpenAIEmbeddingsRequest(msgspec.Struct, kw_only=True):
    input: str | list[Any]
    model: str | None = None
    user: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: NonNegative | None = None


T = TypeVar("T")


def decode_body(body: bytes, schema: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"Failed to deserialize the JSON body into the target type: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise MalformedRequestError(f"Failed to parse the request body as JSON: {exc}") from exc


def parse_inputs(raw: str | list[Any]) -> tuple[list[Input], bool]:
    """TEI's untagged `Input`: a string, a list of ids, or a batch of either.

    Returns the inputs and whether the request was a batch.
    """
    if isinstance(raw, str):
        if not raw:
            raise EmptyInputError("Input validation error: `inputs` cannot be empty")
        return [raw], False
    if not raw:
        raise EmptyInputError("Input validation error: `inputs` cannot be empty")
    if all(_is_token_id(item) for item in raw):
        return [list(raw)], False
    batch: list[Input] = []
    for item in raw:
        if isinstance(item, str):
            if not item:
                raise EmptyInputError("Input validation error: `inputs` cannot be empty")
            batch.append(item)
        elif isinstance(item, list) and all(_is_token_id(i) for i in item):
            if not item:
                raise EmptyInputError("Input validation error: `inputs` cannot be empty")
            batch.append(list(item))
        else:
            raise ValidationError(
                "Failed to deserialize the JSON body into the target type: "
                "inputs must be a string, a list of token ids, or a list of either"
            )
    return batch, True


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
