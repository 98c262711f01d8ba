"""The torch engine in-process, and the servicer's batch checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.base import CausalRerankSpec, EngineSpec, ModelBatch
from embedserve.backends.padding import length_sorted_chunks
from embedserve.backends.server import BatchRejected, decode_batch
from embedserve.backends.torch_backend import TorchBackend
from embedserve.proto.codec import pack_u32
from embedserve.proto.gen_pb import backend_pb2
from tests.models import build_tiny_causal_reranker
from tests.texts import varied_texts


def _batch(tokenizer, texts: list[str]) -> ModelBatch:  # type: ignore[no-untyped-def]
    encodings = [tokenizer.encode(t) for t in texts]
    ids = np.concatenate([np.asarray(e.ids, np.uint32) for e in encodings])
    types = np.concatenate([np.asarray(e.type_ids, np.uint32) for e in encodings])
    lengths = [len(e.ids) for e in encodings]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    return ModelBatch(ids, types, np.zeros_like(ids), cu, max(lengths))


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    return tok


@pytest.mark.parametrize("pooling", ["mean", "cls", "last_token"])
def test_pooling_matches_transformers(model_dir: Path, tokenizer, pooling: str) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModel

    texts = varied_texts(12, seed=5)
    backend = TorchBackend(EngineSpec(model_dir, "cpu", "", pooling, Path("/nonexistent")))
    got = backend.embed(_batch(tokenizer, texts)).pooled
    model = AutoModel.from_pretrained(model_dir).eval()
    for row, text in zip(got, texts):
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.inference_mode():
            hidden = model(input_ids=ids).last_hidden_state[0]
        expected = {"mean": hidden.mean(0), "cls": hidden[0], "last_token": hidden[-1]}[pooling].numpy()
        np.testing.assert_allclose(row, expected, atol=1e-4)


def test_causal_reranker_scores_the_last_token_of_each_padded_row(tmp_path: Path) -> None:
    """logit(yes) - logit(no) at each sequence's last token, in padded chunks of mixed
    lengths, equals the full LM head of transformers run one sequence at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = varied_texts(10, seed=3)
    model_dir = build_tiny_causal_reranker(tmp_path / "causal", texts)
    spec = EngineSpec(model_dir, "cpu", "", "cls", Path("/nonexistent"),
                      causal_rerank=CausalRerankSpec("qwen3", "judge", "yes", "no"))
    backend = TorchBackend(spec)
    assert backend.is_classifier and backend.is_padded
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encodings = [tokenizer.encode(t, add_special_tokens=False)[:200] for t in texts]
    ids = np.concatenate([np.asarray(e, np.uint32) for e in encodings])
    cu = np.concatenate([[0], np.cumsum([len(e) for e in encodings])]).astype(np.uint32)
    got = backend.predict(ModelBatch(ids, np.zeros_like(ids), np.zeros_like(ids), cu, max(map(len, encodings))))
    assert got.shape == (len(texts), 1)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    for row, encoding in zip(got, encodings):
        with torch.inference_mode():
            logits = model(torch.tensor([encoding])).logits[0, -1]
        assert row[0] == pytest.approx(float(logits[yes] - logits[no]), abs=1e-4)


def test_chunks_cover_every_sequence_once() -> None:
    lengths = np.array([5, 300, 7, 250, 6, 8, 120, 5])
    chunks = list(length_sorted_chunks(lengths, 1024))
    assert sorted(i for chunk in chunks for i in chunk) == list(range(8))
    for chunk in chunks:
        assert max(lengths[chunk]) * len(chunk) <= 1024


def _message(lengths: list[int], max_length: int | None = None) -> backend_pb2.Batch:
    total = sum(lengths)
    return backend_pb2.Batch(
        input_ids=pack_u32(np.ones(total)), token_type_ids=pack_u32(np.zeros(total)),
        position_ids=pack_u32(np.zeros(total)), cu_seq_lengths=pack_u32(np.concatenate([[0], np.cumsum(lengths)])),
        max_length=max(lengths) if max_length is None else max_length,
    )


def test_decode_batch_checks_the_contract() -> None:
    assert decode_batch(_message([3, 5]), padded=True, max_batch_tokens=10, max_batch_size=None).size == 2
    with pytest.raises(BatchRejected, match="over max_batch_tokens"):
        decode_batch(_message([3, 6]), padded=True, max_batch_tokens=10, max_batch_size=None)
    assert decode_batch(_message([3, 6]), padded=False, max_batch_tokens=10, max_batch_size=None).size == 2
    with pytest.raises(BatchRejected, match="max_length"):
        decode_batch(_message([3, 5], max_length=9), padded=False, max_batch_tokens=100, max_batch_size=None)
    with pytest.raises(BatchRejected, match="limit of 1"):
        decode_batch(_message([3, 5]), padded=False, max_batch_tokens=100, max_batch_size=1)
    bad = _message([3, 5])
    bad.input_ids = b"\x00\x01\x02"
    with pytest.raises(BatchRejected):
        decode_batch(bad, padded=False, max_batch_tokens=100, max_batch_size=None)
