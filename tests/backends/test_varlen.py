"""The unpadded (varlen) torch path, on CPU with the exact per-sequence kernel,
against transformers computing each text alone. On a GPU the same encoder runs
with a flash-attention kernel, checked by `bench/gpu_check.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedserve.backends.base import EngineSpec
from embedserve.backends.engines import load_engine
from embedserve.backends.torch_backend import TorchBackend
from embedserve.backends.varlen import find_fast_kernel, kernel_error, reference_attention
from tests.backends.parity import cosine, encode, reference_pooled, reference_states
from tests.models import FAMILIES, build_family_model
from tests.texts import varied_texts

TEXTS = varied_texts(12, seed=5)
BERT_LIKE = ["bert", "roberta", "xlm-roberta", "camembert"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("varlen-families")
    return {family: build_family_model(family, root / family, model_dir) for family in [*BERT_LIKE, "distilbert"]}


@pytest.fixture
def varlen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", "varlen")


def _engine(model_dir: Path, pooling: str, tmp_path: Path) -> TorchBackend:
    engine = load_engine("torch", EngineSpec(model_dir, "cpu", "", pooling, tmp_path))
    assert isinstance(engine, TorchBackend)
    return engine


def test_reference_kernel_matches_masked_sdpa() -> None:
    torch.manual_seed(0)
    lengths = [3, 9, 1, 5]
    cu = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32)
    q, k, v = (torch.randn(sum(lengths), 2, 8) for _ in range(3))
    got = reference_attention(q, k, v, cu, max(lengths))
    # The same attention as one padded SDPA call with a key mask.
    padded = [torch.zeros(len(lengths), max(lengths), 2, 8) for _ in range(3)]
    mask = torch.zeros(len(lengths), 1, 1, max(lengths), dtype=torch.bool)
    for row, (start, n) in enumerate(zip(cu[:-1].tolist(), lengths)):
        for dst, src in zip(padded, (q, k, v)):
            dst[row, :n] = src[start : start + n]
        mask[row, ..., :n] = True
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in padded), attn_mask=mask).transpose(1, 2)
    expected = torch.cat([out[row, :n] for row, n in enumerate(lengths)])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert kernel_error(reference_attention, "cpu", torch.float32) < 1e-6


def test_no_fast_kernel_on_cpu() -> None:
    assert find_fast_kernel("cpu", torch.float32) is None


@pytest.mark.parametrize("family", BERT_LIKE)
def test_unpadded_families_match_transformers(family: str, family_dirs: dict[str, Path], varlen: None, tmp_path: Path) -> None:
    model_dir = family_dirs[family]
    pooling = FAMILIES[family][3]
    engine = _engine(model_dir, pooling, tmp_path)
    assert not engine.is_padded and engine.attention == "varlen (reference)"
    batch, sequences, _ = encode(model_dir, TEXTS)
    got = engine.embed(batch).pooled
    expected = reference_pooled(model_dir, sequences, pooling)
    assert got.shape == expected.shape
    assert cosine(got, expected).min() >= 0.9999


@pytest.mark.parametrize("pooling", ["cls", "mean", "last_token"])
def test_unpadded_poolings_and_token_rows(pooling: str, family_dirs: dict[str, Path], varlen: None, tmp_path: Path) -> None:
    from transformers import AutoModel

    model_dir = family_dirs["bert"]
    engine = _engine(model_dir, pooling, tmp_path)
    batch, sequences, _ = encode(model_dir, TEXTS)
    raw = frozenset({1, 4})
    output = engine.embed(type(batch)(batch.input_ids, batch.token_type_ids, batch.position_ids,
                                      batch.cu_seq_lengths, batch.max_length, raw))
    pooled_rows = [i for i in range(len(TEXTS)) if i not in raw]
    expected = reference_pooled(model_dir, [sequences[i] for i in pooled_rows], pooling)
    assert cosine(output.pooled, expected).min() >= 0.9999
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    states = np.concatenate([reference_states(model, sequences[i]) for i in sorted(raw)])
    assert output.token_rows.shape == states.shape
    assert cosine(output.token_rows, states).min() >= 0.9999


@pytest.mark.parametrize("architecture", ["BertForSequenceClassification", "XLMRobertaForSequenceClassification"])
def test_unpadded_classifier_on_pairs(architecture: str, model_dir: Path, varlen: None, tmp_path: Path) -> None:
    import transformers

    config_cls = {"BertForSequenceClassification": transformers.BertConfig,
                  "XLMRobertaForSequenceClassification": transformers.XLMRobertaConfig}[architecture]
    torch.manual_seed(1)
    extra = {"pad_token_id": 1, "max_position_embeddings": 130} if "XLM" in architecture else {}
    config = config_cls(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, type_vocab_size=2, num_labels=3, **extra)
    config.architectures = [architecture]
    classifier = getattr(transformers, architecture)(config).eval()
    target = tmp_path / "classifier"
    classifier.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (target / name).write_bytes((model_dir / name).read_bytes())

    engine = _engine(target, "cls", tmp_path)
    assert engine.is_classifier and not engine.is_padded
    queries = TEXTS[:6]
    batch, sequences, types = encode(target, queries, pairs=TEXTS[6:])
    got = engine.predict(batch)
    with torch.inference_mode():
        expected = np.stack([
            classifier(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([t])).logits[0].numpy()
            for ids, t in zip(sequences, types)
        ])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_auto_pads_on_cpu_and_varlen_refuses_unsupported(family_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    assert _engine(family_dirs["bert"], "mean", tmp_path).is_padded  # auto: no fast kernel on CPU
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", "varlen")
    with pytest.raises(ValueError, match="distilbert.*not BERT-like"):
        _engine(family_dirs["distilbert"], "mean", tmp_path)
    monkeypatch.setenv("EMBEDSERVE_TORCH_ATTENTION", "sideways")
    with pytest.raises(ValueError, match="choose from auto, padded, varlen"):
        _engine(family_dirs["bert"], "mean", tmp_path)


def test_roberta_positions_skip_padding_ids_like_transformers() -> None:
    from transformers.models.roberta import modeling_roberta

    from embedserve.backends.base import ModelBatch
    from embedserve.backends.varlen import PackedBatch

    ids = np.array([0, 5, 1, 7, 2, 0, 9, 2], dtype=np.uint32)  # the first text holds the padding id 1
    cu = np.array([0, 5, 8], dtype=np.uint32)
    batch = ModelBatch(ids, np.zeros_like(ids), np.zeros_like(ids), cu, 5)
    packed = PackedBatch.from_batch(batch, "cpu", padding_idx=1)
    # transformers' own rule: a module function in 4.x, a static method in 5.x.
    derive = getattr(modeling_roberta, "create_position_ids_from_input_ids", None) or \
        modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids
    expected = [derive(torch.from_numpy(ids[a:b].astype(np.int64))[None], 1)[0] for a, b in ((0, 5), (5, 8))]
    assert packed.position_ids.tolist() == torch.cat(expected).tolist() == [2, 3, 1, 4, 5, 2, 3, 4]
    assert PackedBatch.from_batch(batch, "cpu", padding_idx=None).position_ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
