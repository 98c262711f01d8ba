"""One tokenizer worker process: `python -m tokenizer_pool tokenizer-<n>`, its TokenizerConfig on
stdin (proto/child.py).

Requests are encoded inline on the worker's event loop: the process does nothing
else, and the pool on the router side spreads load across workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import grpc

from proto.child import configure_logging, read_config, serve_on_socket
from proto.codec import pack_u32, unpack_u32
from proto.gen_pb import config_pb2, tokenizer_pb2, tokenizer_pb2_grpc
from tokenizer_pool.encoder import Direction, EncodeError, Encoder, EncoderInput, TextPair

logger = logging.getLogger("tokenizer_pool")


class TokenizerServicer(tokenizer_pb2_grpc.TokenizerServicer):
    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder

    async def Encode(self, request: tokenizer_pb2.EncodeRequest, context: grpc.aio.ServicerContext) -> tokenizer_pb2.EncodeResponse:
        direction: Direction = (
            "left" if request.truncation_direction == tokenizer_pb2.TRUNCATION_DIRECTION_LEFT else "right"
        )
        prompt = request.prompt if request.HasField("prompt") else None
        try:
            inputs = [_input_of(item) for item in request.inputs]
            encoded = self._encoder.encode(inputs, request.truncate, direction, prompt)
        except EncodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:  # tokenizers raises plain Exceptions on odd input
            logger.exception("tokenizer failed")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"tokenizer error {exc}")
        return tokenizer_pb2.EncodeResponse(
            encodings=[
                tokenizer_pb2.Encoding(
                    input_ids=pack_u32(e.input_ids),
                    token_type_ids=pack_u32(e.token_type_ids),
                    characters=e.characters,
                )
                for e in encoded
            ]
        )

    async def Tokenize(self, request: tokenizer_pb2.TokenizeRequest, context: grpc.aio.ServicerContext) -> tokenizer_pb2.TokenizeResponse:
        prompt = request.prompt if request.HasField("prompt") else None
        try:
            results = self._encoder.tokenize(list(request.inputs), request.add_special_tokens, prompt)
        except Exception as exc:
            logger.exception("tokenizer failed")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"tokenizer error {exc}")
        return tokenizer_pb2.TokenizeResponse(
            results=[
                tokenizer_pb2.TokenList(
                    tokens=[
                        tokenizer_pb2.Token(id=t.id, text=t.text, special=t.special, start=t.start, stop=t.stop)
                        for t in tokens
                    ]
                )
                for tokens in results
            ]
        )

    async def Decode(self, request: tokenizer_pb2.DecodeRequest, context: grpc.aio.ServicerContext) -> tokenizer_pb2.DecodeResponse:
        try:
            texts = self._encoder.decode([unpack_u32(ids) for ids in request.ids], request.skip_special_tokens)
        except (EncodeError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            logger.exception("tokenizer failed")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"tokenizer error {exc}")
        return tokenizer_pb2.DecodeResponse(texts=texts)

    async def Health(self, request: tokenizer_pb2.HealthRequest, context: grpc.aio.ServicerContext) -> tokenizer_pb2.HealthResponse:
        return tokenizer_pb2.HealthResponse()


def _input_of(item: tokenizer_pb2.EncodeInput) -> EncoderInput:
    kind = item.WhichOneof("kind")
    if kind == "text":
        return item.text
    if kind == "pair":
        return TextPair(item.pair.first, item.pair.second)
    return unpack_u32(item.ids)


async def serve(config: config_pb2.TokenizerConfig) -> None:
    encoder = Encoder(Path(config.model_dir), config.max_input_length)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    tokenizer_pb2_grpc.add_TokenizerServicer_to_server(TokenizerServicer(encoder), server)
    logger.info("tokenizer worker ready")
    await serve_on_socket(server, config.socket_path, grace_s=2, router_link=config.router_link)


def main() -> None:
    # One worker is one core: no rayon threads inside the tokenizers library.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = read_config(config_pb2.TokenizerConfig)
    configure_logging(config.name or "tokenizer", config.json_output)
    asyncio.run(serve(config))
