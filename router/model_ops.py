"""Model-level rules the operations (router/operations.py) apply for HTTP and
gRPC alike: which model type serves which call, prompts, and turning raw
outputs into answers."""

from __future__ import annotations

import numpy as np

from embedserve.router.errors import BackendError, ModelTypeError, input_validation
from embedserve.router.settings import RouterSettings


def require_embedding(settings: RouterSettings) -> None:
    if settings.model_type != "embedding":
        raise ModelTypeError("Backend error: Model is not an embedding model")


def require_classifier(settings: RouterSettings) -> None:
    if settings.model_type not in ("classifier", "reranker"):
        raise ModelTypeError("Backend error: Model is not a classifier model")


def require_reranker(settings: RouterSettings) -> None:
    if settings.model_type != "reranker":
        raise ModelTypeError("Backend error: model is not a re-ranker model")


def require_splade(settings: RouterSettings) -> None:
    if settings.model_type != "embedding" or not settings.is_splade:
        raise ModelTypeError("Backend error: Model is not an embedding model with SPLADE pooling")


def require_dense(settings: RouterSettings, normalize: bool) -> None:
    require_embedding(settings)
    if settings.is_splade and normalize:
        raise ModelTypeError("Backend error: `normalize` is not available for SPLADE models")


def require_token_embeddings(settings: RouterSettings) -> None:
    require_embedding(settings)
    if settings.is_splade:
        raise ModelTypeError("Backend error: `embed_all` is not available for SPLADE models")


def resolve_prompt(settings: RouterSettings, prompt_name: str | None) -> str | None:
    if prompt_name is None:
        return settings.default_prompt
    if prompt_name not in settings.prompts:
        available = ", ".join(sorted(settings.prompts)) or "none"
        raise input_validation(
            f"`prompt_name` is set to `{prompt_name}` but this prompt does not exist. Available prompts: {available}"
        )
    return settings.prompts[prompt_name]


def scores_of(logits: np.ndarray, raw_scores: bool) -> np.ndarray:
    """Softmax over several classes, sigmoid for one, or the raw logits."""
    values = logits.astype(np.float64)
    if not raw_scores:
        if values.shape[-1] == 1:
            values = 1.0 / (1.0 + np.exp(-values))
        else:
            shifted = np.exp(values - values.max(axis=-1, keepdims=True))
            values = shifted / shifted.sum(axis=-1, keepdims=True)
    if np.isnan(values).any():
        raise BackendError("Backend error: score is NaN")
    return values.astype(np.float32)


def ranked_predictions(logits: np.ndarray, raw_scores: bool, labels: list[str]) -> list[tuple[float, str]]:
    """(score, label) for every label, best first."""
    scores = scores_of(logits, raw_scores)
    return [(float(scores[i]), labels[i]) for i in np.argsort(-scores, kind="stable")]


def rerank_order(first_logits: np.ndarray, raw_scores: bool) -> list[tuple[int, float]]:
    """(index, score) of each text, best first; the score is the first logit's."""
    scores = scores_of(first_logits.reshape(-1, 1), raw_scores)[:, 0]
    return [(int(i), float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def sparse_entries(row: np.ndarray) -> list[tuple[int, float]]:
    """The non-zero SPLADE weights, ascending index."""
    return [(int(i), float(row[i])) for i in np.flatnonzero(row)]
