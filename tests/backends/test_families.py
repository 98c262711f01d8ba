"""Each engine on a tiny random model of each architecture family, in-process,
against transformers computing the same pooled embedding text by text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.base import EngineSpec, ModelBatch
from backends.engines import load_engine
from tests.models import FAMILIES, build_family_model
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=11)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_family_model(family, root / family, model_dir) for family in FAMILIES}


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def _encode(model_dir: Path, texts: list[str]) -> tuple[ModelBatch, list[list[int]]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(100)
    encodings = [tokenizer.encode(t) for t in texts]
    ids = np.concatenate([np.asarray(e.ids, np.uint32) for e in encodings])
    lengths = [len(e.ids) for e in encodings]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    return ModelBatch(ids, np.zeros_like(ids), np.zeros_like(ids), cu, max(lengths)), [e.ids for e in encodings]


def _reference(model_dir: Path, sequences: list[list[int]], pooling: str) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    rows = []
    with torch.inference_mode():
        for ids in sequences:  # one at a time: no padding at all in the reference
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            rows.append({"mean": hidden.mean(0), "cls": hidden[0], "last_token": hidden[-1]}[pooling].numpy())
    return np.stack(rows)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_parity(family: str, engine: str, family_dirs: dict[str, Path], onnx_cache: Path) -> None:
    model_dir = family_dirs[family]
    pooling = FAMILIES[family][3]
    batch, sequences = _encode(model_dir, TEXTS)
    backend = load_engine(engine, EngineSpec(model_dir, "cpu", "", pooling, onnx_cache))
    got = backend.embed(batch).pooled  # type: ignore[attr-defined]
    expected = _reference(model_dir, sequences, pooling)
    assert got.shape == expected.shape
    assert _cosine(got, expected).min() >= 0.9999
