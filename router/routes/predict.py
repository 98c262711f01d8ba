"""Classifier routes: /predict and /rerank."""

from __future__ import annotations

import numpy as np
from starlette.requests import Request

from router.errors import EmptyInputError
from router.model_ops import require_reranker, rerank_order
from router.routes._http import until_disconnected
from router.routes._inference import Outcome, call_limits, encode_options, endpoint, run_inputs, truncation
from router.schemas import PredictRequest, RerankRequest, check_batch_size
from router.state import AppState
from tokenizer_pool.pool import Input, TextPair


async def handle_predict(request: Request, state: AppState, body: PredictRequest) -> Outcome:
    work = state.operations.predict(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.raw_scores, call_limits(request)
    )
    result = await until_disconnected(request, work)
    predictions = [[{"score": score, "label": label} for score, label in ranked] for ranked in result.ranked]
    return Outcome(predictions if result.is_batch else predictions[0], result.metadata)


async def handle_rerank(request: Request, state: AppState, body: RerankRequest) -> Outcome:
    require_reranker(state.settings)
    if not body.texts:
        raise EmptyInputError("`texts` cannot be empty")
    check_batch_size(len(body.texts), state.settings.max_client_batch_size)
    if not body.query or not all(body.texts):
        raise EmptyInputError("Input validation error: `inputs` cannot be empty")
    inputs: list[Input] = [TextPair(body.query, text) for text in body.texts]
    options = encode_options(state, body.truncate, body.truncation_direction, None)
    result = await run_inputs(request, state, inputs, options, "batch", "predict")
    ranks = []
    for index, score in rerank_order(np.stack([row[0] for row in result.rows]), body.raw_scores):
        rank: dict[str, object] = {"index": index, "score": score}
        if body.return_text:
            rank["text"] = body.texts[index]
        ranks.append(rank)
    return Outcome(ranks, result.metadata)


predict = endpoint(PredictRequest, handle_predict)
rerank = endpoint(RerankRequest, handle_rerank)
