"""A bulk batch run as slices (backends/batch_job.py, backends/slicing.py) answers what
the batch run whole answers: pooled rows, `/embed_all` token rows, prompt-excluding
mean pooling, classifier logits, SPLADE. Real engines: MiniLM and tiny random models.

Slices regroup sequences into other padded chunks, so float results may differ in the
last bits (other matrix shapes); rows and shapes must match exactly, values to 1e-5."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from embedserve.backends.base import EmbedOutput, EngineSpec, ModelBatch
from embedserve.backends.batch_job import BatchJob, Join
from embedserve.backends.pipeline import Pending, ready
from embedserve.backends.slicing import join_embed, join_predict
from embedserve.backends.torch_backend import TorchBackend
from tests.backends.parity import encode
from tests.models import build_tiny_model
from tests.texts import varied_texts

R = TypeVar("R")
TINY_SLICE = 60  # tokens: a few sequences per slice, one where a sequence is longer


def _texts() -> list[str]:
    return varied_texts(24, seed=3)


def _with(batch: ModelBatch, raw: frozenset[int] = frozenset(), pool_starts: np.ndarray | None = None) -> ModelBatch:
    return ModelBatch(batch.input_ids, batch.token_type_ids, batch.position_ids, batch.cu_seq_lengths,
                      batch.max_length, raw, pool_starts)


def _run_sliced(batch: ModelBatch, launch: Callable[[ModelBatch], Pending[R]], join: Join[R], padded: bool,
                max_cost: int = TINY_SLICE) -> tuple[R, int]:
    job = BatchJob(batch, launch, join, padded, lambda: 0.0)
    steps, done = 0, False
    while not done:
        _, done = job.step(max_cost)
        steps += 1
    pending, _ = job.result()
    return pending.result(), steps


def _assert_same_embed(sliced: EmbedOutput, whole: EmbedOutput) -> None:
    assert sliced.pooled.shape == whole.pooled.shape and sliced.token_rows.shape == whole.token_rows.shape
    np.testing.assert_allclose(sliced.pooled, whole.pooled, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sliced.token_rows, whole.token_rows, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def minilm(model_dir: Path) -> TorchBackend:
    return TorchBackend(EngineSpec(model_dir, "cpu", "", "mean", model_dir))


@pytest.mark.parametrize("case", ["pooled", "raw", "pool_starts"])
def test_sliced_minilm_embeds_like_the_whole_batch(minilm: TorchBackend, model_dir: Path, case: str) -> None:
    batch, _, _ = encode(model_dir, _texts())
    if case == "raw":
        batch = _with(batch, raw=frozenset({0, 5, 6, 11, 23}))
    elif case == "pool_starts":
        batch = _with(batch, pool_starts=np.minimum(batch.lengths - 1, np.arange(batch.size) % 4).astype(np.uint32))
    whole = minilm.embed(batch)
    sliced, steps = _run_sliced(batch, lambda b: ready(minilm.embed(b)), join_embed, minilm.is_padded)
    assert steps > 5  # it really ran in slices
    _assert_same_embed(sliced, whole)


def test_a_batch_within_one_slice_runs_whole(minilm: TorchBackend, model_dir: Path) -> None:
    batch, _, _ = encode(model_dir, _texts()[:3])
    seen: list[int] = []

    def launch(b: ModelBatch) -> Pending[EmbedOutput]:
        seen.append(b.size)
        return ready(minilm.embed(b))

    sliced, steps = _run_sliced(batch, launch, join_embed, True, max_cost=batch.cost(True))
    assert steps == 1 and seen == [3]
    _assert_same_embed(sliced, minilm.embed(batch))


@pytest.mark.parametrize("kind", ["classifier", "splade"])
def test_sliced_tiny_models_answer_like_the_whole_batch(kind: str, model_dir: Path, tmp_path: Path) -> None:
    tiny = build_tiny_model(kind, tmp_path / kind, model_dir)  # type: ignore[arg-type]
    engine = TorchBackend(EngineSpec(tiny, "cpu", "", "splade" if kind == "splade" else "cls", tiny))
    texts = _texts()
    batch, _, _ = encode(tiny, texts) if kind == "splade" else encode(tiny, texts, pairs=list(reversed(texts)))
    if kind == "splade":
        sliced, steps = _run_sliced(batch, lambda b: ready(engine.embed(b)), join_embed, engine.is_padded)
        _assert_same_embed(sliced, engine.embed(batch))
    else:
        logits, steps = _run_sliced(batch, lambda b: ready(engine.predict(b)), join_predict, engine.is_padded)
        whole = engine.predict(batch)
        assert logits.shape == whole.shape == (len(texts), 3)
        np.testing.assert_allclose(logits, whole, rtol=1e-5, atol=1e-5)
    assert steps > 5


class DeviceStandIn:
    """A launch-ahead engine's timing, on the host: each launch returns at once; its
    results are there when the test lets the "device" finish it. Rows carry a tag per
    sequence (its first token id), so order mistakes show."""

    def __init__(self) -> None:
        self.launched = 0
        self.finished = 0
        self.lock = threading.Lock()

    def launch(self, batch: ModelBatch) -> Pending[EmbedOutput]:
        self.launched += 1
        tags = batch.input_ids[batch.cu_seq_lengths[:-1].astype(np.int64)].astype(np.float32)

        def finish() -> EmbedOutput:
            with self.lock:
                self.finished += 1
            return EmbedOutput(tags[:, None].repeat(2, axis=1), np.empty((0, 2), np.float32))

        return Pending(finish)

    def unfinished(self) -> int:
        return self.launched - self.finished


def test_launch_ahead_slices_keep_two_on_the_device_and_join_in_order() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]
    ids = np.concatenate([np.full(n, 100 + i) for i, n in enumerate(lengths)]).astype(np.uint32)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    batch = ModelBatch(ids, np.zeros_like(ids), np.zeros_like(ids), cu, max(lengths))
    device = DeviceStandIn()
    job: BatchJob[EmbedOutput] = BatchJob(batch, device.launch, join_embed, False, lambda: 0.0)
    measured: list[int] = []
    done = False
    while not done:
        tokens, done = job.step(8)
        measured.append(tokens)
        # The slice just launched, and at most the one before it still computing.
        assert device.unfinished() <= 1
    assert device.launched > 3
    assert measured[0] == 0  # the first launch waited for nothing: it measured nothing
    assert all(t > 0 for t in measured[1:])
    pending, _ = job.result()
    assert not pending.done  # the last slice's results are fetched off the forward thread
    output = pending.result()
    assert output.pooled[:, 0].tolist() == [100 + i for i in range(len(lengths))]


def test_model_cpu_seconds_add_up_over_the_slices(minilm: TorchBackend, model_dir: Path) -> None:
    batch, _, _ = encode(model_dir, _texts())
    readings = iter(range(1, 1000))
    job: BatchJob[Any] = BatchJob(batch, lambda b: ready(minilm.embed(b)), join_embed, True,
                                  lambda: float(next(readings)))
    steps, done = 0, False
    while not done:
        _, done = job.step(TINY_SLICE)
        steps += 1
    _, model_cpu_s = job.result()
    assert model_cpu_s == sum(range(1, steps + 1))  # one reading per step, all of them this batch's
