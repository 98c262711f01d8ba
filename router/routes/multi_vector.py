"""bge-m3's routes (router/multi_output.py): /embed_multi_vector, its multi-vectors
(ColBERT), and /embed_hybrid, any of dense, sparse and multi-vector outputs of the
same inputs from one forward pass. /embed_sparse and /embed answer bge-m3 too
(router/routes/embed.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedserve.router.errors import input_validation
from embedserve.router.multi_output import Wanted
from embedserve.router.routes._http import HttpCall, until_disconnected
from embedserve.router.routes._inference import Outcome, call_limits, endpoint, truncation
from embedserve.router.schemas import EmbedHybridRequest, EmbedMultiVectorRequest


async def handle_embed_multi_vector(call: HttpCall, body: EmbedMultiVectorRequest) -> Outcome:
    work = call.model.operations.embed_multi_vector(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, body.normalize,
        call_limits(call),
    )
    result = await until_disconnected(call, work)
    return Outcome(result.matrices, result.metadata)


async def handle_embed_hybrid(call: HttpCall, body: EmbedHybridRequest) -> Outcome:
    if not body.outputs:
        raise input_validation("`outputs` cannot be empty: name dense, sparse or multi_vector")
    wanted = Wanted.NONE
    if "sparse" in body.outputs:
        wanted |= Wanted.SPARSE
    if "multi_vector" in body.outputs:
        wanted |= Wanted.MULTI_VECTOR
    work = call.model.operations.embed_hybrid(
        body.inputs, truncation(body.truncate, body.truncation_direction), body.prompt_name, body.normalize, wanted,
        call_limits(call), dense="dense" in body.outputs,
    )
    result = await until_disconnected(call, work)
    count = len(result.dense if result.dense is not None else result.sparse or result.multi_vectors or [])
    answers: list[dict[str, Any]] = [{} for _ in range(count)]
    for i, answer in enumerate(answers):
        if result.dense is not None:
            answer["dense"] = result.dense[i]
        if result.sparse is not None:
            answer["sparse"] = [{"index": index, "value": value} for index, value in result.sparse[i]]
        if result.multi_vectors is not None:
            answer["multi_vector"] = np.ascontiguousarray(result.multi_vectors[i])
    return Outcome(answers, result.metadata)


embed_multi_vector = endpoint(EmbedMultiVectorRequest, handle_embed_multi_vector)
embed_hybrid = endpoint(EmbedHybridRequest, handle_embed_hybrid)
