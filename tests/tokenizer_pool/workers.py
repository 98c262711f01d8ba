"""Real tokenizer worker processes for the tokenizer pool's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc

from embedserve.proto.child import encode_config
from embedserve.proto.gen_pb import config_pb2, tokenizer_pb2, tokenizer_pb2_grpc
from embedserve.tokenizer_pool.frames import encode_socket_path
from tests.conftest import ROOT, wait_for

MAX_INPUT_LENGTH = 64


def _healthy(socket_path: str) -> bool:
    if not os.path.exists(encode_socket_path(socket_path)):
        return False
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        try:
            tokenizer_pb2_grpc.TokenizerStub(channel).Health(tokenizer_pb2.HealthRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return True


@contextmanager
def running_worker(
    models: Path | Sequence[config_pb2.TokenizerModel], socket_path: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A real tokenizer worker, configured over its stdin as the launcher does.
    `models` is the worker's models in order, or one model's folder (served with
    MAX_INPUT_LENGTH)."""
    if isinstance(models, Path):
        models = [config_pb2.TokenizerModel(model_dir=str(models), max_input_length=MAX_INPUT_LENGTH)]
    config = config_pb2.TokenizerConfig(socket_path=socket_path, name="tokenizer-test", models=models)
    process = subprocess.Popen([sys.executable, "-m", "embedserve.tokenizer_pool", "tokenizer-test"], stdin=subprocess.PIPE, cwd=ROOT)
    assert process.stdin is not None
    process.stdin.write(encode_config(config))
    process.stdin.flush()
    try:
        wait_for(lambda: process.poll() is not None or _healthy(socket_path), 120, "the worker to serve")
        assert process.poll() is None
        yield process
    finally:
        process.stdin.close()  # EOF: the worker stops and removes its sockets
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
