"""Errors the router answers with, and their HTTP mapping.

    EmbedServeError            (base; carries status, error_type, message)
    ├── EmptyInputError         400  Empty
    ├── MalformedRequestError   400  Validation   (body is not JSON)
    ├── UnauthorizedError       401  (empty body, as TEI)
    ├── PayloadTooLargeError    413  Validation
    ├── UnsupportedMediaError   415  Validation
    ├── DeadlineExceededError   408  Timeout      (queued past its x-request-timeout-ms)
    ├── BodyReadTimeoutError    408  Timeout      (body slower than --body-read-timeout)
    ├── ModelNotFoundError      404  NotFound     (no served model has that name)
    ├── ValidationError         422  Validation
    ├── TokenizerError          422  Tokenizer
    ├── BackendError            424  Backend      (BackendDownError: the process is gone)
    ├── OverloadedError         429  Overloaded
    └── BackendUnavailableError 503  Unhealthy    (ShuttingDownError: SIGTERM's drain)

Bodies are TEI's `{"error": ..., "error_type": ...}`; the OpenAI-compatible routes
use `{"message", "code", "type"}` instead (see `to_openai_body`).
"""

from __future__ import annotations

from typing import ClassVar


class EmbedServeError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "Backend"
    # Label of te_request_failure{err=...}
    metric_label: ClassVar[str] = "inference"
    # Answered before the body was fully read: the connection cannot be reused,
    # and saying so keeps clients from sending their next request into it.
    closes_connection: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def to_body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}

    def to_openai_body(self) -> dict[str, object]:
        return {"message": self.message, "code": self.status, "type": self.error_type}


class EmptyInputError(EmbedServeError):
    status = 400
    error_type = "Empty"
    metric_label = "validation"

    def __init__(self, message: str = "Input validation error: `inputs` cannot be empty") -> None:
        super().__init__(message)


class MalformedRequestError(EmbedServeError):
    status = 400
    error_type = "Validation"
    metric_label = "validation"


class UnauthorizedError(EmbedServeError):
    status = 401
    error_type = "Unauthorized"
    metric_label = "validation"


class PayloadTooLargeError(EmbedServeError):
    status = 413
    error_type = "Validation"
    metric_label = "validation"
    closes_connection = True


class UnsupportedMediaError(EmbedServeError):
    status = 415
    error_type = "Validation"
    metric_label = "validation"
    closes_connection = True


class DeadlineExceededError(EmbedServeError):
    """The request's deadline passed before its inputs ran; they never reach a backend."""

    status = 408
    error_type = "Timeout"
    metric_label = "deadline"


class BodyReadTimeoutError(EmbedServeError):
    """The body did not arrive within --body-read-timeout: a slow or stalled upload."""

    status = 408
    error_type = "Timeout"
    metric_label = "body_timeout"
    closes_connection = True


class ModelNotFoundError(EmbedServeError):
    """A request named a model this server does not serve: never answered by
    another model. OpenAI's routes answer in OpenAI's own not-found shape."""

    status = 404
    error_type = "NotFound"
    metric_label = "validation"

    def to_openai_body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": "invalid_request_error", "param": "model",
                          "code": "model_not_found"}}


class ValidationError(EmbedServeError):
    status = 422
    error_type = "Validation"
    metric_label = "validation"


class BatchSizeError(ValidationError):
    metric_label = "batch_size"


class TokenizerError(EmbedServeError):
    status = 422
    error_type = "Tokenizer"
    metric_label = "tokenization"


class BackendError(EmbedServeError):
    status = 424
    error_type = "Backend"
    metric_label = "inference"


class BackendDownError(BackendError):
    """The backend process is gone (crashed, restarting): its batch fails."""


class ModelTypeError(BackendError):
    metric_label = "model_type"


class OverloadedError(EmbedServeError):
    status = 429
    error_type = "Overloaded"
    metric_label = "overloaded"

    def __init__(self, message: str = "Model is overloaded") -> None:
        super().__init__(message)


class BackendUnavailableError(EmbedServeError):
    status = 503
    error_type = "Unhealthy"
    metric_label = "inference"


class ShuttingDownError(BackendUnavailableError):
    """SIGTERM's drain has begun: no new request is taken."""

    closes_connection = True

    def __init__(self, message: str = "the server is shutting down") -> None:
        super().__init__(message)


def input_validation(message: str) -> ValidationError:
    return ValidationError(f"Input validation error: {message}")
