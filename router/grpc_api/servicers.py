"""The tei.v1 services: decode each message, call the operation HTTP calls too
(router/operations.py), encode the answer.

gRPC differs from HTTP where TEI's does (tei-contract §4.4): one input per
message; `truncate` is a plain bool defaulting to false; unary calls fail fast
when no permit is free, stream items and rerank texts wait for one; streams
answer in order, and a stream the client abandons takes its pending items out
of the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, TypeVar

import grpc
import numpy as np

from embedserve.proto import tracing
from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from embedserve.router.errors import EmbedServeError, ValidationError
from embedserve.router.infer import ResponseMetadata
from embedserve.router.infer import CallLimits
from embedserve.router.lanes import PRIORITY_HEADER, parse_priority
from embedserve.router.operations import Truncation
from embedserve.router.metrics import Metrics
from embedserve.router.served_model import MODEL_HEADER, ServedModel
from embedserve.router.version import VERSION
from embedserve.router.state import AppState

if TYPE_CHECKING:
    from embedserve.proto.tracing.otlp import Tracing

# tei-contract §2.3
STATUS_BY_ERROR_TYPE = {
    "Unhealthy": grpc.StatusCode.UNAVAILABLE,
    "Backend": grpc.StatusCode.FAILED_PRECONDITION,
    "Overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "Validation": grpc.StatusCode.INVALID_ARGUMENT,
    "Tokenizer": grpc.StatusCode.FAILED_PRECONDITION,
    "Empty": grpc.StatusCode.INVALID_ARGUMENT,
    # embedserve's own: the x-model metadata names no served model.
    "NotFound": grpc.StatusCode.NOT_FOUND,
}

MODEL_TYPES = {
    "embedding": tei_pb2.MODEL_TYPE_EMBEDDING,
    "classifier": tei_pb2.MODEL_TYPE_CLASSIFIER,
    "reranker": tei_pb2.MODEL_TYPE_RERANKER,
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Outcome = tuple[Any, ResponseMetadata | None]


def _direction(value: int) -> Literal["right", "left"]:
    return "left" if value == tei_pb2.TRUNCATION_DIRECTION_LEFT else "right"


def metadata_message(meta: ResponseMetadata) -> tei_pb2.Metadata:
    def ns(seconds: float) -> int:
        return int(seconds * 1e9)

    return tei_pb2.Metadata(
        compute_chars=meta.compute_characters,
        compute_tokens=meta.compute_tokens,
        total_time_ns=ns(meta.total_time_s),
        tokenization_time_ns=ns(meta.tokenization_time_s),
        queue_time_ns=ns(meta.queue_time_s),
        inference_time_ns=ns(meta.inference_time_s),
    )


class _Service:
    """Error mapping and the unary / streaming shapes every service shares."""

    def __init__(self, state: AppState) -> None:
        self._state = state

    def _model(self, context: grpc.aio.ServicerContext) -> ServedModel:
        """The model the `x-model` metadata names; none: the default model."""
        for key, value in context.invocation_metadata() or ():
            if key == MODEL_HEADER:
                return self._state.models.named(value if isinstance(value, str) else value.decode("latin-1"))
        return self._state.models.default

    def _metrics(self, context: grpc.aio.ServicerContext) -> Metrics:
        try:
            return self._model(context).metrics
        except EmbedServeError:
            return self._state.models.default.metrics

    async def _abort(self, context: grpc.aio.ServicerContext, exc: EmbedServeError) -> NoReturn:
        self._metrics(context).request_failure.inc(err=exc.metric_label)
        tracing.current_failed(exc.message)
        await context.abort(STATUS_BY_ERROR_TYPE.get(exc.error_type, grpc.StatusCode.INTERNAL), exc.message)
        raise AssertionError("context.abort returned")  # it always raises

    def _limits(self, context: grpc.aio.ServicerContext, wait: bool) -> CallLimits:
        """Stream items wait for permits (`wait`), unary calls fail fast with 429;
        the `x-priority` metadata picks the queue lane (router/lanes.py)."""
        priority = None
        for key, value in context.invocation_metadata() or ():
            if key == PRIORITY_HEADER:
                priority = parse_priority(value if isinstance(value, str) else value.decode("latin-1"))
                break
        return CallLimits(wait_for_permit=wait, priority=priority)

    def _count_dropped(self, context: grpc.aio.ServicerContext) -> None:
        # One per request (per stream item), as HTTP counts a client that left.
        self._metrics(context).request_failure.inc(err="dropped")

    async def _unary(self, context: grpc.aio.ServicerContext, work: Awaitable[Outcome], span_name: str) -> Any:
        """`span_name`: the request span's, TEI's method name (proto/tracing)."""
        tracer = tracing.active()
        if tracer is None:
            return await self._unary_call(context, work)
        with tracer.request(span_name, *_trace_context(context)):
            return await self._unary_call(context, work)

    async def _unary_call(self, context: grpc.aio.ServicerContext, work: Awaitable[Outcome]) -> Any:
        try:
            response, meta = await work
        except EmbedServeError as exc:
            await self._abort(context, exc)
        except asyncio.CancelledError:
            self._count_dropped(context)  # the client cancelled or left
            raise
        if meta is not None:
            # TEI sends its x-* timing headers as gRPC metadata on unary calls too.
            await context.send_initial_metadata(tuple(meta.headers().items()))
        return response

    async def _stream(
        self,
        requests: AsyncIterator[Req],
        context: grpc.aio.ServicerContext,
        handle: Callable[[Req], Awaitable[Outcome]],
        span_name: str,
    ) -> AsyncIterator[Any]:
        """Answer each message in order while later ones already queue; at most
        `grpc_max_parallel_stream_requests` in flight. Leaving (client gone, error)
        cancels whatever is still pending. Traced, each message is a request span
        `span_name` (TEI's stream method name) under the call's `traceparent`."""
        tracer = tracing.active()
        if tracer is not None:
            handle = _traced_items(handle, tracer, span_name, _trace_context(context))
        pending: asyncio.Queue[asyncio.Future[Outcome] | None] = asyncio.Queue(
            maxsize=self._state.settings.grpc_max_parallel_stream_requests
        )

        def count_if_dropped(item: asyncio.Future[Outcome]) -> None:
            if item.cancelled():
                self._count_dropped(context)

        async def read() -> None:
            async for request in requests:
                item = asyncio.ensure_future(handle(request))
                # A callback, not an except clause: an item cancelled before it
                # started never runs its own code, yet its request is dropped too.
                item.add_done_callback(count_if_dropped)
                await pending.put(item)
            await pending.put(None)

        reader = asyncio.ensure_future(read())
        current: asyncio.Future[Outcome] | None = None
        try:
            while (current := await pending.get()) is not None:
                try:
                    response, _ = await current
                except EmbedServeError as exc:
                    await self._abort(context, exc)
                yield response
            await reader
        finally:
            reader.cancel()
            if current is not None:
                current.cancel()
            while not pending.empty():
                item = pending.get_nowait()
                if item is not None:
                    item.cancel()



def _trace_context(context: grpc.aio.ServicerContext) -> tuple[str | None, str | None]:
    """The caller's W3C `traceparent` and `tracestate` from the call's metadata."""
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in (tracing.TRACEPARENT, tracing.TRACESTATE) and key not in found:
            found[key] = value if isinstance(value, str) else value.decode("latin-1")
    return found.get(tracing.TRACEPARENT), found.get(tracing.TRACESTATE)


def _traced_items(
    handle: Callable[[Req], Awaitable[Outcome]], tracer: Tracing, span_name: str,
    parent: tuple[str | None, str | None],
) -> Callable[[Req], Awaitable[Outcome]]:
    async def traced(request: Req) -> Outcome:
        with tracer.request(span_name, *parent):
            return await handle(request)

    return traced


class _Truncatable(Protocol):
    """The truncation fields every tei.v1 inference message has."""

    @property
    def truncate(self) -> bool: ...

    @property
    def truncation_direction(self) -> int: ...


def _truncation(message: _Truncatable) -> Truncation:
    # gRPC's `truncate` is a plain bool: false unless the client set it, never the server's default.
    return Truncation(message.truncate, _direction(message.truncation_direction))


def _prompt_name(message: Any) -> str | None:
    return str(message.prompt_name) if message.HasField("prompt_name") else None


class InfoService(_Service, tei_pb2_grpc.InfoServicer):
    async def Info(self, request: tei_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> tei_pb2.InfoResponse:
        try:
            model = self._model(context)
        except EmbedServeError as exc:
            await self._abort(context, exc)
        settings = model.settings
        response = tei_pb2.InfoResponse(
            version=VERSION,
            model_id=settings.model_id,
            model_dtype=model.facts.dtype,
            model_type=MODEL_TYPES[settings.model_type],
            max_concurrent_requests=settings.max_concurrent_requests,
            max_input_length=settings.max_input_length,
            max_batch_tokens=settings.max_batch_tokens,
            max_client_batch_size=settings.max_client_batch_size,
            tokenization_workers=settings.tokenization_workers,
        )
        if settings.revision is not None:
            response.model_sha = settings.revision
        if model.queue.max_batch_requests is not None:
            response.max_batch_requests = model.queue.max_batch_requests
        return response


class EmbedService(_Service, tei_pb2_grpc.EmbedServicer):
    async def _embed(self, request: tei_pb2.EmbedRequest, context: grpc.aio.ServicerContext, wait: bool) -> Outcome:
        result = await self._model(context).operations.embed_pooled(
            request.inputs,
            _truncation(request),
            _prompt_name(request),
            request.normalize if request.HasField("normalize") else True,
            request.dimensions if request.HasField("dimensions") else None,
            self._limits(context, wait),
        )
        [vector] = result.vectors
        response = tei_pb2.EmbedResponse(embeddings=vector.tolist(), metadata=metadata_message(result.metadata))
        return response, result.metadata

    async def _embed_sparse(self, request: tei_pb2.EmbedSparseRequest, context: grpc.aio.ServicerContext, wait: bool) -> Outcome:
        result = await self._model(context).operations.embed_sparse(
            request.inputs, _truncation(request), _prompt_name(request), self._limits(context, wait)
        )
        values = [tei_pb2.SparseValue(index=i, value=v) for i, v in result.weights[0]]
        return tei_pb2.EmbedSparseResponse(sparse_embeddings=values, metadata=metadata_message(result.metadata)), (
            result.metadata
        )

    async def _embed_all(self, request: tei_pb2.EmbedAllRequest, context: grpc.aio.ServicerContext, wait: bool) -> Outcome:
        result = await self._model(context).operations.embed_all(
            request.inputs, _truncation(request), _prompt_name(request), self._limits(context, wait)
        )
        tokens = [tei_pb2.TokenEmbedding(embeddings=row.tolist()) for row in np.asarray(result.matrices[0])]
        return tei_pb2.EmbedAllResponse(token_embeddings=tokens, metadata=metadata_message(result.metadata)), (
            result.metadata
        )

    async def Embed(self, request: tei_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._embed(request, context, wait=False), "embed")

    async def EmbedStream(self, requests: AsyncIterator[tei_pb2.EmbedRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._embed(r, context, wait=True), "embed_stream"):
            yield response

    async def EmbedSparse(self, request: tei_pb2.EmbedSparseRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._embed_sparse(request, context, wait=False), "embed_sparse")

    async def EmbedSparseStream(
        self, requests: AsyncIterator[tei_pb2.EmbedSparseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._embed_sparse(r, context, wait=True), "embed_sparse_stream"):
            yield response

    async def EmbedAll(self, request: tei_pb2.EmbedAllRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._embed_all(request, context, wait=False), "embed_all")

    async def EmbedAllStream(self, requests: AsyncIterator[tei_pb2.EmbedAllRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._embed_all(r, context, wait=True), "embed_all_stream"):
            yield response


class PredictService(_Service, tei_pb2_grpc.PredictServicer):
    async def _predict(
        self, inputs: str | list[str], request: _Truncatable, raw_scores: bool, context: grpc.aio.ServicerContext, wait: bool
    ) -> Outcome:
        result = await self._model(context).operations.predict(
            inputs, _truncation(request), raw_scores, self._limits(context, wait)
        )
        predictions = [tei_pb2.Prediction(score=score, label=label) for score, label in result.ranked[0]]
        return tei_pb2.PredictResponse(predictions=predictions, metadata=metadata_message(result.metadata)), (
            result.metadata
        )

    def _single(self, request: tei_pb2.PredictRequest, context: grpc.aio.ServicerContext, wait: bool) -> Awaitable[Outcome]:
        async def run() -> Outcome:
            return await self._predict(request.inputs, request, request.raw_scores, context, wait)

        return run()

    def _pair(self, request: tei_pb2.PredictPairRequest, context: grpc.aio.ServicerContext, wait: bool) -> Awaitable[Outcome]:
        async def run() -> Outcome:
            texts = list(request.inputs)
            if len(texts) not in (1, 2):
                raise ValidationError(f"`inputs` must have one or two texts, got {len(texts)}")
            # A list of one or two texts is a single text or a pair, as in HTTP's /predict.
            return await self._predict(texts, request, request.raw_scores, context, wait)

        return run()

    async def Predict(self, request: tei_pb2.PredictRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._single(request, context, wait=False), "predict")

    async def PredictPair(self, request: tei_pb2.PredictPairRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._pair(request, context, wait=False), "predict_pair")

    async def PredictStream(self, requests: AsyncIterator[tei_pb2.PredictRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._single(r, context, wait=True), "predict_stream"):
            yield response

    async def PredictPairStream(
        self, requests: AsyncIterator[tei_pb2.PredictPairRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._pair(r, context, wait=True), "predict_pair_stream"):
            yield response


class RerankService(_Service, tei_pb2_grpc.RerankServicer):
    async def _rerank(
        self,
        context: grpc.aio.ServicerContext,
        pairs: list[tuple[str, str]],
        raw_scores: bool,
        return_text: bool,
        truncate: bool,
        direction: int,
    ) -> Outcome:
        # Rerank texts wait for permits, as in TEI, rather than failing the call.
        result = await self._model(context).operations.rerank(
            pairs, Truncation(truncate, _direction(direction)), raw_scores, self._limits(context, wait=True),
            is_batch=len(pairs) != 1,
        )
        ranks = []
        for index, score in result.order:
            rank = tei_pb2.Rank(index=index, score=score)
            if return_text:
                rank.text = pairs[index][1]
            ranks.append(rank)
        return tei_pb2.RerankResponse(ranks=ranks, metadata=metadata_message(result.metadata)), result.metadata

    async def Rerank(self, request: tei_pb2.RerankRequest, context: grpc.aio.ServicerContext) -> Any:
        pairs = [(request.query, text) for text in request.texts]
        work = self._rerank(context, pairs, request.raw_scores, request.return_text, request.truncate,
                            request.truncation_direction)
        return await self._unary(context, work, "rerank")

    async def RerankStream(
        self, requests: AsyncIterator[tei_pb2.RerankStreamRequest], context: grpc.aio.ServicerContext
    ) -> Any:
        messages = [message async for message in requests]
        first = messages[0] if messages else tei_pb2.RerankStreamRequest()
        pairs = [(m.query, m.text) for m in messages]
        work = self._rerank(context, pairs, first.raw_scores, first.return_text, first.truncate, first.truncation_direction)
        return await self._unary(context, work, "rerank_stream")


class TokenizeService(_Service, tei_pb2_grpc.TokenizeServicer):
    async def _tokenize(self, request: tei_pb2.EncodeRequest, context: grpc.aio.ServicerContext) -> Outcome:
        [message] = await self._model(context).operations.tokenize(
            [request.inputs], request.add_special_tokens, _prompt_name(request), "tei"
        )
        # The worker built the tei.v1 message; parsing it back is one C pass, not a Python loop per token.
        return tei_pb2.EncodeResponse.FromString(message), None

    async def _decode(self, request: tei_pb2.DecodeRequest, context: grpc.aio.ServicerContext) -> Outcome:
        [text] = await self._model(context).operations.decode([list(request.ids)], request.skip_special_tokens)
        return tei_pb2.DecodeResponse(text=text), None

    async def Tokenize(self, request: tei_pb2.EncodeRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._tokenize(request, context), "tokenize")

    async def TokenizeStream(self, requests: AsyncIterator[tei_pb2.EncodeRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._tokenize(r, context), "tokenize_stream"):
            yield response

    async def Decode(self, request: tei_pb2.DecodeRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._unary(context, self._decode(request, context), "decode")

    async def DecodeStream(self, requests: AsyncIterator[tei_pb2.DecodeRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in self._stream(requests, context, lambda r: self._decode(r, context), "decode_stream"):
            yield response
