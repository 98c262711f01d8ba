"""Classifier routes: /predict and /rerank."""

from __future__ import annotations

from embedserve.router.routes._http import HttpCall, until_disconnected
from embedserve.router.routes._inference import Outcome, call_limits, endpoint, truncation
from embedserve.router.schemas import PredictRequest, RerankRequest


async def handle_predict(call: HttpCall, body: PredictRequest) -> Outcome:
    work = call.model.operations.predict(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.raw_scores, call_limits(call)
    )
    result = await until_disconnected(call, work)
    predictions = [[{"score": score, "label": label} for score, label in ranked] for ranked in result.ranked]
    return Outcome(predictions if result.is_batch else predictions[0], result.metadata)


async def handle_rerank(call: HttpCall, body: RerankRequest) -> Outcome:
    work = call.model.operations.rerank(
        [(body.query, text) for text in body.texts], truncation(body.truncate, body.truncation_direction),
        body.raw_scores, call_limits(call), is_batch=True, instruction=body.instruction,
    )
    result = await until_disconnected(call, work)
    ranks = []
    for index, score in result.order:
        rank: dict[str, object] = {"index": index, "score": score}
        if body.return_text:
            rank["text"] = body.texts[index]
        ranks.append(rank)
    return Outcome(ranks, result.metadata)


predict = endpoint(PredictRequest, handle_predict)
rerank = endpoint(RerankRequest, handle_rerank)
