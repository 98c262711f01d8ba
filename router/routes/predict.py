"""Classifier routes: /predict and /rerank."""

from __future__ import annotations

import numpy as np
from starlette.requests import Request

from router.errors import BackendError, EmptyInputError
from router.routes._inference import Outcome, encode_options, endpoint, require_classifier, require_reranker, run_inputs
from router.schemas import PredictRequest, RerankRequest, check_batch_size, parse_predict_inputs
from router.state import AppState
from tokenizer_pool.pool import Input, TextPair


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


async def handle_predict(request: Request, state: AppState, body: PredictRequest) -> Outcome:
    require_classifier(state)
    inputs, is_batch = parse_predict_inputs(body.inputs)
    check_batch_size(len(inputs), state.settings.max_client_batch_size)
    # TEI applies the server's default prompt to single texts; a pair then fails.
    options = encode_options(state, body.truncate, body.truncation_direction, state.settings.default_prompt)
    result = await run_inputs(request, state, inputs, options, "batch" if is_batch else "single", "predict")
    labels = state.settings.labels()
    predictions = []
    for logits in result.rows:
        scores = scores_of(logits, body.raw_scores)
        order = np.argsort(-scores, kind="stable")
        predictions.append([{"score": float(scores[i]), "label": labels[i]} for i in order])
    return Outcome(predictions if is_batch else predictions[0], result.metadata)


async def handle_rerank(request: Request, state: AppState, body: RerankRequest) -> Outcome:
    require_reranker(state)
    if not body.texts:
        raise EmptyInputError("`texts` cannot be empty")
    check_batch_size(len(body.texts), state.settings.max_client_batch_size)
    if not body.query or not all(body.texts):
        raise EmptyInputError("Input validation error: `inputs` cannot be empty")
    inputs: list[Input] = [TextPair(body.query, text) for text in body.texts]
    options = encode_options(state, body.truncate, body.truncation_direction, None)
    result = await run_inputs(request, state, inputs, options, "batch", "predict")
    scores = scores_of(np.stack([row[:1] for row in result.rows]), body.raw_scores)[:, 0]
    ranks = []
    for index in np.argsort(-scores, kind="stable"):
        rank: dict[str, object] = {"index": int(index), "score": float(scores[index])}
        if body.return_text:
            rank["text"] = body.texts[index]
        ranks.append(rank)
    return Outcome(ranks, result.metadata)


predict = endpoint(PredictRequest, handle_predict)
rerank = endpoint(RerankRequest, handle_rerank)
