"""The static engine with the tokenizer workers' model2vec rules, in process, against
model2vec's own StaticModel.encode on the same folder (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model2vec import StaticModel

from embedserve.backends.base import EngineSpec, ModelBatch
from embedserve.backends.static import StaticBackend
from embedserve.tokenizer_pool.encoder import STATIC_EMPTY_ID, Encoder
from tests.models import build_model2vec_model

LONG = " ".join(f"word{i} tokenization" for i in range(60))
TEXTS = [
    "a static embedding is a mean of rows",
    "Unknown symbols 🦄 ☃ are dropped 🦄",  # [UNK] tokens, dropped by model2vec
    "🦄☃",  # nothing but unknown tokens: a zero vector
    " \t ",  # no token at all: a zero vector
    "[CLS] special tokens written out stay [SEP]",
    LONG,
    "x" * 400,  # one long word: model2vec's character cut decides where it ends
]


def _embed(model_dir: Path, max_length: int, texts: list[str], truncate: bool = True) -> np.ndarray:
    encoder = Encoder(model_dir, max_input_length=max_length, static_embedding=True)
    encoded = encoder.encode(list(texts), truncate=truncate, direction="right", prompt=None)
    ids = np.concatenate([e.input_ids for e in encoded]).astype(np.uint32)
    cu = np.concatenate([[0], np.cumsum([len(e.input_ids) for e in encoded])]).astype(np.uint32)
    batch = ModelBatch(ids, np.zeros_like(ids), np.zeros_like(ids), cu, int(np.diff(cu).max()))
    engine = StaticBackend(EngineSpec(model_dir, "cpu", "", "mean", model_dir))
    return engine.embed(batch).pooled


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("max_length", [512, 8])
def test_equals_model2vec(tmp_path: Path, model_dir: Path, normalize: bool, max_length: int) -> None:
    folder = build_model2vec_model(tmp_path / "m2v", model_dir, normalize=normalize, max_length=max_length)
    expected = StaticModel.from_pretrained(folder).encode(TEXTS)
    got = _embed(folder, max_length, TEXTS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not got[2].any() and not got[3].any()


def test_vocabulary_quantized_model_equals_model2vec(tmp_path: Path, model_dir: Path) -> None:
    folder = build_model2vec_model(tmp_path / "m2v", model_dir, normalize=True, vocabulary_quantization=50)
    expected = StaticModel.from_pretrained(folder).encode(TEXTS)
    np.testing.assert_allclose(_embed(folder, 512, TEXTS), expected, rtol=1e-5, atol=1e-6)


def test_tokens_are_model2vecs(tmp_path: Path, model_dir: Path) -> None:
    folder = build_model2vec_model(tmp_path / "m2v", model_dir, max_length=8)
    reference = StaticModel.from_pretrained(folder)
    encoder = Encoder(folder, max_input_length=8, static_embedding=True)
    for text in TEXTS:
        ids = encoder.encode([text], truncate=True, direction="right", prompt=None)[0].input_ids.tolist()
        cut = text[: 8 * reference.median_token_length]
        expected = reference.tokenize([cut])[0]
        assert ids == (expected or [STATIC_EMPTY_ID]), text


def test_untruncated_long_input_is_refused(tmp_path: Path, model_dir: Path) -> None:
    from embedserve.tokenizer_pool.encoder import EncodeError

    folder = build_model2vec_model(tmp_path / "m2v", model_dir, max_length=8)
    with pytest.raises(EncodeError, match="less than 8 tokens"):
        _embed(folder, 8, [LONG], truncate=False)
