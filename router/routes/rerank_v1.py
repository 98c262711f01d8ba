"""/v1/rerank: reranking in Jina's shape (TEI PR #797), which Cohere's clients read too.

The same operation as TEI's /rerank (router/operations.py `rerank`): the same
scores, sigmoid of the first logit (relevance in 0..1, as Jina and Cohere
return), the same batch-size limit and the server's --auto-truncate. Errors
come in the OpenAI-like shape of /v1/embeddings.
"""

from __future__ import annotations

from embedserve.router.operations import Truncation
from embedserve.router.routes._http import HttpCall, until_disconnected
from embedserve.router.routes._inference import Outcome, call_limits, endpoint
from embedserve.router.schemas import RerankDocument, V1RerankRequest


async def handle_rerank_v1(call: HttpCall, body: V1RerankRequest) -> Outcome:
    texts = [document.text if isinstance(document, RerankDocument) else document for document in body.documents]
    model = call.choose_model(body.model)
    work = model.operations.rerank(
        [(body.query, text) for text in texts], Truncation(truncate=None), False, call_limits(call),
        is_batch=True, instruction=body.instruction, texts_field="documents",
    )
    result = await until_disconnected(call, work)
    order = result.order if body.top_n is None else result.order[: body.top_n]
    results: list[dict[str, object]] = []
    for index, score in order:
        entry: dict[str, object] = {"index": index, "relevance_score": score}
        if body.return_documents:
            entry["document"] = {"text": texts[index]}
        results.append(entry)
    tokens = result.metadata.compute_tokens
    content = {
        "model": model.name,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Outcome(content, result.metadata)


rerank_v1 = endpoint(V1RerankRequest, handle_rerank_v1, openai_errors=True, span_name="rerank_v1")
