"""A real backend process, asked over its real gRPC Unix socket: an interactive batch
(`Batch.interactive`) overtakes bulk batches queued before it and is answered between
the slices of the one running; bulk work still finishes under a flood of interactive
batches. Assertions are on the order answers arrive in, never on durations."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from embedserve.proto.child import encode_config
from embedserve.proto.codec import pack_u32, unpack_tensor
from embedserve.proto.gen_pb import backend_pb2, backend_pb2_grpc, config_pb2
from tests.conftest import ROOT, SCRATCH_ROOT, short_socket_prefix, wait_for

MAX_BATCH_TOKENS = 16384
GUARD_S = 300  # against a hang on a loaded machine, not a timing


@dataclass
class Backend:
    stub: backend_pb2_grpc.BackendStub
    process: subprocess.Popen[bytes]

    def batches_run(self) -> int:
        return int(self.stub.Health(backend_pb2.HealthRequest(), timeout=30).batches_run)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Iterator[Backend]:
    socket_path = short_socket_prefix() + "-backend-0"
    config = config_pb2.BackendConfig(
        model_dir=str(model_dir), socket_path=socket_path, backend="torch", pooling="mean", device="cpu",
        max_batch_tokens=MAX_BATCH_TOKENS, name="backend-0", cache_dir=str(SCRATCH_ROOT / "cache"),
    )
    process = subprocess.Popen([sys.executable, "-m", "embedserve.backends", "backend-0"], stdin=subprocess.PIPE, cwd=ROOT)
    assert process.stdin is not None
    process.stdin.write(encode_config(config))
    process.stdin.flush()
    channel = grpc.insecure_channel(f"unix://{socket_path}")
    stub = backend_pb2_grpc.BackendStub(channel)

    def healthy() -> bool:
        assert process.poll() is None, "the backend exited"
        try:
            stub.Health(backend_pb2.HealthRequest(), timeout=2)
            return True
        except grpc.RpcError:
            return False

    try:
        wait_for(healthy, 180, "the backend to serve")
        yield Backend(stub, process)
    finally:
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        process.stdin.close()


def _batch(seed: int, sequences: int, length: int, interactive: bool) -> backend_pb2.Batch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 20000, size=(sequences, length))
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    total = sequences * length
    return backend_pb2.Batch(
        input_ids=pack_u32(ids.reshape(-1)), token_type_ids=pack_u32(np.zeros(total)),
        position_ids=pack_u32(np.tile(np.arange(length), sequences)),
        cu_seq_lengths=pack_u32(np.arange(0, total + 1, length)), max_length=length, interactive=interactive,
    )


class Answers:
    """Names of the calls in the order their answers arrived."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._lock = threading.Lock()

    def send(self, stub: backend_pb2_grpc.BackendStub, name: str, batch: backend_pb2.Batch) -> grpc.Future:
        call = stub.Embed.future(batch, timeout=GUARD_S)
        call.add_done_callback(lambda _: self._arrived(name))
        return call

    def _arrived(self, name: str) -> None:
        with self._lock:
            self.order.append(name)


def test_an_interactive_batch_is_answered_before_bulk_batches_queued_ahead_of_it(backend: Backend) -> None:
    answers = Answers()
    before = backend.batches_run()
    # Two full bulk batches (64 x 256 tokens each): seconds of work on a CPU.
    bulk = [answers.send(backend.stub, f"bulk-{i}", _batch(i, 64, 256, interactive=False)) for i in range(2)]
    # Both are in the backend's queue (counted as they are submitted to the forward thread).
    wait_for(lambda: backend.batches_run() == before + 2, GUARD_S, "both bulk batches to arrive", tick_s=0.005)
    query = answers.send(backend.stub, "query", _batch(99, 1, 12, interactive=True))
    pooled = unpack_tensor(query.result().embeddings)
    results = [unpack_tensor(call.result().embeddings) for call in bulk]
    assert pooled.shape == (1, 384) and all(r.shape == (64, 384) for r in results)
    # bulk-1 could not start before bulk-0 was done; without lanes the query would come last.
    assert answers.order.index("query") < answers.order.index("bulk-1")
    assert answers.order[-1] == "bulk-1"


def test_bulk_batches_finish_under_a_flood_of_interactive_batches(backend: Backend) -> None:
    answers = Answers()
    done = threading.Event()
    flood_answers = 0

    def flood(seed: int) -> None:
        nonlocal flood_answers
        while not done.is_set():
            backend.stub.Embed(_batch(seed, 4, 32, interactive=True), timeout=GUARD_S)
            flood_answers += 1

    senders = [threading.Thread(target=flood, args=(seed,)) for seed in range(4)]
    for sender in senders:
        sender.start()
    try:
        bulk = answers.send(backend.stub, "bulk", _batch(7, 64, 256, interactive=False))
        assert unpack_tensor(bulk.result().embeddings).shape == (64, 384)  # it finished, the flood still going
        answered_meanwhile = flood_answers
    finally:
        done.set()
        for sender in senders:
            sender.join(GUARD_S)
    assert answered_meanwhile > 0  # the flood was served all along, not only after the bulk batch
