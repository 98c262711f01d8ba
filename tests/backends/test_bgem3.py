"""The torch engine's bge-m3 heads (backends/bgem3.py) in-process: one batch mixing
sequences that want pooled rows, per-token rows, lexical weights and multi-vectors,
padded and unpadded, whole and sliced, against the heads applied to transformers'
states of each sequence alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.base import EmbedOutput, EngineSpec, ModelBatch
from embedserve.backends.server import BatchRejected, decode_batch
from embedserve.backends.slicing import join_embed, sub_batch
from embedserve.backends.torch_backend import TorchBackend
from embedserve.proto.codec import pack_u32
from embedserve.proto.gen_pb import backend_pb2
from tests.backends.test_torch_backend import _batch
from tests.models import build_bgem3_model
from tests.texts import varied_texts

TEXTS = varied_texts(6, seed=3)
RAW, SPARSE, COLBERT = frozenset({0}), frozenset({1, 3, 5}), frozenset({2, 3, 4})


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_bgem3_model(tmp_path_factory.mktemp("m3") / "model", model_dir)


@pytest.fixture(scope="module")
def mixed(m3_dir: Path) -> ModelBatch:
    from tokenizers import Tokenizer

    batch = _batch(Tokenizer.from_file(str(m3_dir / "tokenizer.json")), TEXTS)
    return ModelBatch(batch.input_ids, batch.token_type_ids, batch.position_ids, batch.cu_seq_lengths,
                      batch.max_length, RAW, None, SPARSE, COLBERT)


Expected = tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, np.ndarray]]


@pytest.fixture(scope="module")
def expected(m3_dir: Path, mixed: ModelBatch) -> Expected:
    """Per sequence alone: its CLS row, its lexical weight per token (special tokens 0), its multi-vectors."""
    batch = mixed
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(m3_dir).eval()
    sparse, colbert = torch.nn.Linear(32, 1), torch.nn.Linear(32, 32)
    sparse.load_state_dict(torch.load(m3_dir / "sparse_linear.pt", weights_only=True))
    colbert.load_state_dict(torch.load(m3_dir / "colbert_linear.pt", weights_only=True))
    special = torch.tensor([101, 0, 100])  # the BERT tokenizer's [CLS], [PAD], [UNK]: it has no eos
    dense, weights, vectors = {}, {}, {}
    for seq in range(batch.size):
        ids = torch.from_numpy(batch.input_ids[batch.cu_seq_lengths[seq] : batch.cu_seq_lengths[seq + 1]].astype(np.int64))
        with torch.inference_mode():
            states = model(input_ids=ids[None]).last_hidden_state[0]
            dense[seq] = states[0].numpy()
            weights[seq] = torch.relu(sparse(states)).squeeze(-1).masked_fill(torch.isin(ids, special), 0).numpy()
            vectors[seq] = colbert(states[1:]).numpy()
    return dense, weights, vectors


def _check(output: EmbedOutput, batch: ModelBatch, expected: Expected) -> None:
    dense, weights, vectors = expected
    pooled = [seq for seq in range(batch.size) if seq not in RAW]
    np.testing.assert_allclose(output.pooled, np.stack([dense[s] for s in pooled]), atol=1e-4)
    assert output.token_rows.shape == (int(batch.lengths[0]), 32)
    np.testing.assert_allclose(output.sparse_weights, np.concatenate([weights[s] for s in sorted(SPARSE)]), atol=1e-4)
    np.testing.assert_allclose(output.colbert_rows, np.concatenate([vectors[s] for s in sorted(COLBERT)]), atol=1e-4)
    assert (output.sparse_weights[0] == 0.0) and (output.sparse_weights >= 0).all()  # [CLS] first, relu


@pytest.mark.parametrize("attention", ["padded", "varlen"])
def test_heads_on_a_mixed_batch_match_each_sequence_alone(
    m3_dir: Path, mixed: ModelBatch, expected: Expected, attention: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", attention)
    engine = TorchBackend(EngineSpec(m3_dir, "cpu", "", "cls", Path("/nonexistent")))
    assert (engine.sparse_head, engine.colbert_dim, engine.is_padded) == (True, 32, attention == "padded")
    whole = engine.embed(mixed)
    _check(whole, mixed, expected)
    # Sliced (backends/slicing.py): each slice keeps its sequences' outputs, joined back in batch order.
    slices = [sub_batch(mixed, np.array(part)) for part in ([1, 4], [0, 2, 5], [3])]
    joined = join_embed(mixed, slices, [engine.embed(part.batch) for part in slices])
    for name in ("pooled", "token_rows", "sparse_weights", "colbert_rows"):
        np.testing.assert_allclose(getattr(joined, name), getattr(whole, name), atol=1e-5)


def test_a_model_without_heads_refuses_them(model_dir: Path, mixed: ModelBatch) -> None:
    engine = TorchBackend(EngineSpec(model_dir, "cpu", "", "mean", Path("/nonexistent")))
    assert (engine.sparse_head, engine.colbert_dim) == (False, 0)
    with pytest.raises(ValueError, match="no bge-m3"):
        engine.embed(mixed)


def test_decode_batch_checks_the_head_indices() -> None:
    def request(**fields: object) -> backend_pb2.Batch:
        ids = np.array([101, 7, 102, 101, 102], np.uint32)
        return backend_pb2.Batch(input_ids=pack_u32(ids), token_type_ids=pack_u32(np.zeros(5)),
                                 position_ids=pack_u32(np.zeros(5)), cu_seq_lengths=pack_u32(np.array([0, 3, 5])),
                                 max_length=3, **fields)

    batch = decode_batch(request(sparse_indices=[1], colbert_indices=[0, 1]), True, 100, None)
    assert (batch.sparse_indices, batch.colbert_indices) == (frozenset({1}), frozenset({0, 1}))
    with pytest.raises(BatchRejected, match="outside the batch"):
        decode_batch(request(colbert_indices=[2]), True, 100, None)
    with pytest.raises(BatchRejected, match="raw sequence"):
        decode_batch(request(raw_indices=[0], sparse_indices=[0]), True, 100, None)
