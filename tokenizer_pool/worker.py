"""One tokenizer worker process: `python -m tokenizer_pool tokenizer-<n>`, its TokenizerConfig on
stdin (proto/child.py).

Encoding, tokenizing and decoding run on one thread, in arrival order, so the
event loop stays free to answer Health while a large (legal) input is being
tokenized: the router's /health asks every worker with a short timeout. The pool on the router side
spreads load across workers.

A worker serves every model of the server (TokenizerConfig.models), each with its
own tokenizer; each request names its model by index.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc
import orjson
import uvloop

from embedserve.proto.child import read_config, serve_on_socket
from embedserve.proto.codec import pack_u32, unpack_u32
from embedserve.proto.gen_pb import config_pb2, tei_pb2, tokenizer_pb2, tokenizer_pb2_grpc
from embedserve.proto.logs import configure_logging
from embedserve.tokenizer_pool.encode_server import EncodeService, start_encode_server
from embedserve.tokenizer_pool.encoder import EncodeError, Encoder, TokenColumns, UnknownModelError, encoder_for
from embedserve.tokenizer_pool.frames import encode_socket_path

logger = logging.getLogger("embedserve.tokenizer_pool")

T = TypeVar("T")


class TokenizerServicer(tokenizer_pb2_grpc.TokenizerServicer):
    def __init__(self, encoders: Sequence[Encoder]) -> None:
        # One per model, in TokenizerConfig.models order; a request names its model's index.
        self.encoders = encoders
        # One thread: an encoder is not thread-safe (it switches truncation per call),
        # and a worker is meant to use one core.
        # The encode link (encode_server.py) shares it.
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")

    async def _off_loop(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.thread, work)

    async def Tokenize(
        self, request: tokenizer_pb2.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tokenizer_pb2.TokenizeResult]:
        prompt = request.prompt if request.HasField("prompt") else None
        inputs, add_special = list(request.inputs), request.add_special_tokens
        write = _tei_message if request.format == tokenizer_pb2.TOKENIZE_FORMAT_TEI_PROTO else _json_array
        encoder = await self._encoder(request.model, context)
        try:
            encoder.check_tokenizable(inputs, prompt)  # all of them, before any answer
        except EncodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        for item in inputs:
            # One input per turn on the thread: an Encode arriving meanwhile runs in between.
            try:
                tokens = await self._off_loop(partial(_tokens, encoder, write, item, add_special, prompt))
            except Exception as exc:
                logger.exception("tokenizer failed")
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"tokenizer error {exc}")
            yield tokenizer_pb2.TokenizeResult(tokens=tokens)

    async def Decode(self, request: tokenizer_pb2.DecodeRequest, context: grpc.aio.ServicerContext) -> tokenizer_pb2.DecodeResponse:
        encoder = await self._encoder(request.model, context)
        try:
            id_lists = [unpack_u32(ids) for ids in request.ids]
            texts = await self._off_loop(lambda: encoder.decode(id_lists, request.skip_special_tokens))
        except (EncodeError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            logger.exception("tokenizer failed")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"tokenizer error {exc}")
        return tokenizer_pb2.DecodeResponse(texts=texts)

    async def _encoder(self, model: int, context: grpc.aio.ServicerContext) -> Encoder:
        """The request's model's encoder; an index the worker lacks fails the request
        (FAILED_PRECONDITION: a tokenizer failure, not the client's input)."""
        try:
            return encoder_for(self.encoders, model)
        except UnknownModelError as exc:
            logger.error("%s", exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # abort raises; this tells mypy the function never falls through

    async def Health(self, request: tokenizer_pb2.HealthRequest, context: grpc.aio.ServicerContext) -> tokenizer_pb2.HealthResponse:
        return tokenizer_pb2.HealthResponse()


def _tokens(encoder: Encoder, write: Callable[[TokenColumns], bytes], item: str, add_special: bool, prompt: str | None) -> bytes:
    return write(encoder.tokenize_one(item, add_special, prompt))


def _json_array(tokens: TokenColumns) -> bytes:
    return orjson.dumps(
        [
            {"id": i, "text": text, "special": special, "start": start, "stop": stop}
            for i, text, special, start, stop in zip(tokens.ids, tokens.texts, tokens.special, tokens.starts, tokens.stops)
        ]
    )


def _tei_message(tokens: TokenColumns) -> bytes:
    # Unset start/stop (special tokens) stay absent, as in TEI.
    message = tei_pb2.EncodeResponse(
        tokens=[
            tei_pb2.SimpleToken(id=i, text=text, special=special, start=start, stop=stop)
            for i, text, special, start, stop in zip(tokens.ids, tokens.texts, tokens.special, tokens.starts, tokens.stops)
        ]
    )
    serialized: bytes = message.SerializeToString()
    return serialized


def load_encoders(config: config_pb2.TokenizerConfig) -> list[Encoder]:
    """One encoder per configured model, in order: each its own tokenizer and caches,
    so no model's state (truncation, runs, prompt lengths) leaks into another's."""
    if not config.models:
        raise ValueError("a tokenizer worker needs at least one model in TokenizerConfig.models")
    encoders = [Encoder(Path(m.model_dir), m.max_input_length, m.exclude_prompt_from_pooling, m.static_embedding)
                for m in config.models]
    for index, model in enumerate(config.models):
        logger.info("model %d: %s (max_input_length %d)", index, model.name or model.model_dir, model.max_input_length)
    return encoders


async def serve(config: config_pb2.TokenizerConfig) -> None:
    encoders = load_encoders(config)
    servicer = TokenizerServicer(encoders)
    # The encode link listens before gRPC starts: once Health (the launcher's
    # readiness probe) answers, the router can connect to both.
    encode_path = encode_socket_path(config.socket_path)
    encode_server = await start_encode_server(EncodeService(encoders, servicer.thread), encode_path)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    tokenizer_pb2_grpc.add_TokenizerServicer_to_server(servicer, server)
    logger.info("tokenizer worker ready")
    try:
        await serve_on_socket(server, config.socket_path, grace_s=2, router_link=config.router_link)
    finally:
        encode_server.close()
        if os.path.lexists(encode_path):
            os.unlink(encode_path)


def main() -> None:
    # One worker is one core: no rayon threads inside the tokenizers library.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = read_config(config_pb2.TokenizerConfig)
    configure_logging(config.name or "tokenizer", config.json_output)
    # uvloop: its cross-thread wake-up (the tokenizer thread's answers) is cheaper.
    uvloop.run(serve(config))
