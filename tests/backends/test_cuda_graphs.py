"""The CUDA-graph path's bucketing, padding, slicing and fallback (backends/cuda_graphs.py)
and the fused layer math (backends/layer_math.py), on CPU: `EagerForward` stands in for a
capture with the same static buffers, the padded-to-bucket forward runs eagerly, and its
first rows must be the unpadded result. The captures themselves run on a GPU
(bench/issue16.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedserve.backends.base import EngineSpec, ModelBatch
from embedserve.backends.cuda_graphs import (
    Bucket,
    EagerForward,
    Forward,
    GraphedEncoder,
    capture_example,
    choose_bucket,
    pad_to_bucket,
    padding_lengths,
    plan_buckets,
    token_sizes,
)
from embedserve.backends.layer_math import CompiledBlock, make_block
from embedserve.backends.torch_backend import TorchBackend
from embedserve.backends.varlen import NamedKernel, PackedBatch, VarlenEncoder, reference_attention
from tests.backends.parity import cosine, encode, reference_pooled
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=7)


def _batch(lengths: list[int], seed: int = 0) -> ModelBatch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 2000, sum(lengths)).astype(np.uint32)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    positions = np.concatenate([np.arange(n, dtype=np.uint32) for n in lengths])
    return ModelBatch(ids, np.zeros_like(ids), positions, cu, max(lengths))


def test_token_sizes_step_by_half_doublings_up_to_the_budget() -> None:
    assert token_sizes(1024) == [128, 192, 256, 384, 512, 768, 1024]
    assert token_sizes(1000, steps_per_doubling=1) == [128, 256, 512, 1000]
    assert token_sizes(100) == [100]
    sizes = token_sizes(32768)
    assert sizes == sorted(set(sizes)) and sizes[-1] == 32768 and all(s % 64 == 0 for s in sizes)


def test_plan_buckets_is_bounded_and_covers_the_budget() -> None:
    buckets = plan_buckets(32768, 512)
    assert len(buckets) <= 128 and buckets == tuple(sorted(buckets))
    assert max(b.tokens for b in buckets) == 32768
    assert all(b.seqs <= b.tokens and b.max_seqlen == min(512, b.tokens) for b in buckets)
    # Only buckets whose slots can hold their tokens: 8 sequences of 512 are 4096 at most.
    assert all(b.tokens <= b.seqs * b.max_seqlen for b in buckets)
    assert Bucket(4096, 8, 512) in buckets and Bucket(6144, 8, 512) not in buckets
    few = plan_buckets(32768, 512, max_graphs=20)
    assert len(few) == 20 and few[-1].tokens == 32768  # coarser steps, then the largest kept


def test_choose_bucket_takes_the_smallest_that_holds_the_batch_and_its_padding() -> None:
    buckets = plan_buckets(4096, 512)
    assert choose_bucket(buckets, 100, 3, 40) == Bucket(128, 8, 128)
    # 129 tokens: the next size; 9 sequences need more than 8 slots.
    assert choose_bucket(buckets, 129, 9, 40) == Bucket(192, 32, 192)
    # 1097 tokens go into 1472 with 375 spare: 3 padding sequences of 128 and one of 119.
    assert padding_lengths(375, 512) == [128, 128, 119]
    assert choose_bucket(buckets, 1097, 29, 100) == Bucket(1472, 32, 512)
    assert choose_bucket(buckets, 1097, 30, 100) == Bucket(1472, 128, 512)
    # 8 sequences and one of padding need more than 8 slots.
    assert choose_bucket(buckets, 1000, 8, 300) == Bucket(1024, 32, 512)
    assert choose_bucket(buckets, 1024, 8, 300) == Bucket(1024, 8, 512)
    assert choose_bucket(buckets, 4097, 8, 100) is None  # over the budget: eager
    assert choose_bucket(buckets, 3000, 3000, 1) is None  # more sequences than any bucket's slots
    assert choose_bucket(buckets, 600, 2, 513) is None  # longer than the captured max_seqlen


@pytest.mark.parametrize("seed", range(20))
def test_padded_batch_has_the_bucket_shape_and_the_batch_as_prefix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, rng.integers(1, 40)).tolist()
    batch = _batch(lengths, seed)
    buckets = plan_buckets(16384, 512)
    bucket = choose_bucket(buckets, sum(lengths), len(lengths), max(lengths))
    assert bucket is not None
    padded = pad_to_bucket(batch, bucket, pad_id=0)
    assert len(padded.input_ids) == bucket.tokens and padded.size == bucket.seqs
    assert padded.max_length == bucket.max_seqlen and int(padded.lengths.max()) <= bucket.max_seqlen
    n, tokens = batch.size, len(batch.input_ids)
    assert np.array_equal(padded.cu_seq_lengths[: n + 1], batch.cu_seq_lengths)
    assert np.array_equal(padded.input_ids[:tokens], batch.input_ids)
    assert (padded.input_ids[tokens:] == 0).all()
    pads = padding_lengths(bucket.tokens - tokens, bucket.max_seqlen)
    assert padded.lengths[n:].tolist() == pads + [0] * (bucket.seqs - n - len(pads))
    assert all(length <= 128 for length in pads)
    assert all(0 < length <= bucket.max_seqlen for length in padded.lengths[:n])


def test_pad_to_bucket_refuses_a_batch_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pad_to_bucket(_batch([100, 100]), Bucket(128, 8, 128), pad_id=0)


class CountingReplays:
    """EagerForward, counting the replays; `fail` makes every capture raise."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.made: list[PackedBatch] = []
        self.runs = 0

    def __call__(self, forward: Forward, example: PackedBatch) -> EagerForward:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.made.append(example)
        outer = self

        class Counted(EagerForward):
            def run(self, packed: PackedBatch) -> torch.Tensor:
                outer.runs += 1
                return super().run(packed)

        return Counted(forward, example)


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> VarlenEncoder:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    return VarlenEncoder(model, NamedKernel("reference", reference_attention), "fused")


@pytest.mark.parametrize("layers", ["modules", "fused"])
def test_graphed_states_are_the_unpadded_states(model_dir: Path, layers: str) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    inner = VarlenEncoder(model, NamedKernel("reference", reference_attention), layers)
    replays = CountingReplays()
    graphed = GraphedEncoder(inner, plan_buckets(256, inner.max_positions, seq_slots=(8, 32)), "cpu", replays)
    graphed.capture()
    assert graphed.captured == len(graphed.buckets) and graphed.failure is None
    # Captured largest first, each on an example of its bucket's shape.
    assert [int(e.input_ids.shape[0]) for e in replays.made] == sorted((b.tokens for b in graphed.buckets), reverse=True)
    batch, _, _ = encode(model_dir, TEXTS[:6])  # 226 tokens: 30 of padding in the 256 bucket
    with torch.inference_mode():
        expected = inner.hidden_states(inner.pack(batch, "cpu"))
        packed = graphed.pack(batch, "cpu")
        assert packed.bucket is not None and int(packed.bucket.input_ids.shape[0]) > len(batch.input_ids)
        got = graphed.hidden_states(packed)
    assert replays.runs == 1 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_batches_fitting_no_bucket_run_eagerly(encoder: VarlenEncoder, model_dir: Path) -> None:
    replays = CountingReplays()
    graphed = GraphedEncoder(encoder, plan_buckets(256, encoder.max_positions, seq_slots=(8,)), "cpu", replays)
    graphed.capture()
    with torch.inference_mode():
        for lengths in ([300], [1] * 9):  # over the budget; more sequences than slots
            batch = _batch(lengths)
            assert graphed.bucket_for(batch) is None
            packed = graphed.pack(batch, "cpu")
            assert packed.bucket is None
            torch.testing.assert_close(graphed.hidden_states(packed), encoder.hidden_states(encoder.pack(batch, "cpu")))
    assert replays.runs == 0


def test_a_capture_failure_runs_everything_eagerly(encoder: VarlenEncoder, caplog: pytest.LogCaptureFixture) -> None:
    graphed = GraphedEncoder(encoder, plan_buckets(256, encoder.max_positions), "cpu", CountingReplays(fail=True))
    graphed.capture()
    assert graphed.captured == 0 and graphed.failure is not None and "stream is capturing" in graphed.failure
    assert sum("CUDA graph capture failed" in r.message for r in caplog.records) == 1
    batch = _batch([5, 7])
    with torch.inference_mode():
        packed = graphed.pack(batch, "cpu")
        assert packed.bucket is None
        torch.testing.assert_close(graphed.hidden_states(packed), encoder.hidden_states(encoder.pack(batch, "cpu")))


def test_compiled_block_falls_back_to_the_plain_block_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken_compile(block):  # type: ignore[no-untyped-def]
        calls.append(block)
        raise RuntimeError("Compiler: cc is not found")

    plain = make_block(torch.nn.functional.gelu, 1e-12, 1e-12)
    compiled = CompiledBlock(plain, broken_compile)
    torch.manual_seed(0)
    width, inner = 8, 16
    weights = (torch.randn(width, width), torch.randn(width), torch.ones(width), torch.zeros(width),
               torch.randn(inner, width), torch.randn(inner), torch.randn(width, inner), torch.randn(width),
               torch.ones(width), torch.zeros(width))
    context, hidden = torch.randn(5, width), torch.randn(5, width)
    for _ in range(2):
        torch.testing.assert_close(compiled(context, hidden, *weights), plain(context, hidden, *weights))
    assert len(calls) == 1 and compiled.failure == "RuntimeError: Compiler: cc is not found"
    assert sum("torch.compile of the layer math failed" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(("layers", "pooling"), [("fused", "mean"), ("modules", "cls"), ("epilogue", "cls")])
def test_engine_with_graphs_on_matches_transformers(model_dir: Path, layers: str, pooling: str,
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", "varlen")
    monkeypatch.setenv("EMBEDSERVE_TORCH_LAYERS", layers)
    monkeypatch.setenv("EMBEDSERVE_TORCH_GRAPHS", "on")
    engine = TorchBackend(EngineSpec(model_dir, "cpu", "", pooling, tmp_path, max_batch_tokens=256))
    assert "graphs in" in engine.attention and (layers == "modules") != (f"{layers} layers" in engine.attention)
    batch, sequences, _ = encode(model_dir, TEXTS[:6])
    raw = frozenset({2})
    output = engine.embed(ModelBatch(batch.input_ids, batch.token_type_ids, batch.position_ids,
                                     batch.cu_seq_lengths, batch.max_length, raw))
    expected = reference_pooled(model_dir, [s for i, s in enumerate(sequences) if i not in raw], pooling)
    # The epilogue's GELU is the tanh approximation: close, not exact.
    assert cosine(output.pooled, expected).min() >= (0.999 if layers == "epilogue" else 0.9999)
    assert output.token_rows.shape == (len(sequences[2]), engine.hidden_size)
    monkeypatch.setenv("EMBEDSERVE_TORCH_GRAPHS", "sideways")
    with pytest.raises(ValueError, match="choose from off, on"):
        TorchBackend(EngineSpec(model_dir, "cpu", "", pooling, tmp_path))


@pytest.mark.parametrize("max_tokens", [4096, 32768, 65536])
def test_every_planned_bucket_takes_its_capture_example(max_tokens: int) -> None:
    # The first GPU run captured nothing: one 512-token sequence plus 128-token
    # padding pieces outnumbered the slots of (32768 tokens, 128 sequences).
    for bucket in plan_buckets(max_tokens, 512):
        example = capture_example(bucket, pad_id=0)
        padded = pad_to_bucket(example, bucket, pad_id=0)
        assert len(padded.input_ids) == bucket.tokens and padded.size == bucket.seqs
        assert example.max_length <= bucket.max_seqlen
