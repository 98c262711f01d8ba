"""Each engine on a tiny random model of each architecture family, in-process,
against transformers computing the same pooled embedding text by text."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from embedserve.backends.base import EngineSpec
from embedserve.backends.engines import load_engine
from embedserve.backends.padding import padded_chunks
from tests.backends.parity import cosine, encode, reference_logits, reference_pooled
from tests.models import (
    CLASSIFIER_FAMILIES,
    CLASSIFIER_LABELS,
    FAMILIES,
    build_family_classifier,
    build_family_model,
    build_gte_qwen2_model,
)
from tests.texts import varied_texts

TEXTS = varied_texts(10, seed=11)
PASSAGES = varied_texts(10, seed=12)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_family_model(family, root / family, model_dir) for family in FAMILIES}


@pytest.fixture(scope="module")
def onnx_cache() -> Path:
    # The session's cache (conftest): entries are named after the files' contents, so the
    # e2e servers on the same tiny checkpoints (deberta-v2 reranker, gte-Qwen2) reuse these.
    return Path(os.environ["EMBEDSERVE_CACHE_DIR"])


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_parity(family: str, engine: str, family_dirs: dict[str, Path], onnx_cache: Path) -> None:
    model_dir = family_dirs[family]
    pooling = FAMILIES[family][3]
    backend = load_engine(engine, EngineSpec(model_dir, "cpu", "", pooling, onnx_cache))
    for texts in (TEXTS, TEXTS[4:5]):  # mixed lengths (padded), then one text alone
        batch, sequences, _ = encode(model_dir, texts)
        got = backend.embed(batch).pooled  # type: ignore[attr-defined]
        expected = reference_pooled(model_dir, sequences, pooling)
        assert got.shape == expected.shape
        assert cosine(got, expected).min() >= 0.9999


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_code_shipped_for_a_transformers_type_is_never_run(engine: str, tmp_path: Path, model_dir: Path,
                                                           onnx_cache: Path) -> None:
    # gte-Qwen2: Qwen2 weights with modeling_qwen.py beside them (auto_map).
    gte_qwen2 = build_gte_qwen2_model(tmp_path / "gte-qwen2", model_dir)
    backend = load_engine(engine, EngineSpec(gte_qwen2, "cpu", "", "last_token", onnx_cache))
    batch, sequences, _ = encode(gte_qwen2, TEXTS)
    got = backend.embed(batch).pooled  # type: ignore[attr-defined]
    assert cosine(got, reference_pooled(gte_qwen2, sequences, "last_token")).min() >= 0.9999


@pytest.fixture(scope="module")
def classifier_dirs(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("classifier-families")
    return {
        (family, kind): build_family_classifier(family, root / f"{family}-{kind}", model_dir,
                                                CLASSIFIER_LABELS if kind == "classifier" else {0: "LABEL_0"})
        for family in CLASSIFIER_FAMILIES for kind in ("reranker", "classifier")
    }


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("kind", ["reranker", "classifier"])
@pytest.mark.parametrize("family", list(CLASSIFIER_FAMILIES))
def test_classifier_family_parity(family: str, kind: str, engine: str,
                                  classifier_dirs: dict[tuple[str, str], Path], onnx_cache: Path) -> None:
    model_dir = classifier_dirs[(family, kind)]
    backend = load_engine(engine, EngineSpec(model_dir, "cpu", "", "cls", onnx_cache))
    # Query-passage pairs of mixed lengths (one padded chunk), then one pair alone.
    for queries, passages in ((TEXTS, PASSAGES), (TEXTS[:1], PASSAGES[:1])):
        batch, sequences, types = encode(model_dir, queries, passages)
        if len(queries) > 1:
            assert any(c.lengths.min() < c.lengths.max() for c in padded_chunks(batch, None, 0))
        got = backend.predict(batch)  # type: ignore[attr-defined]
        expected = reference_logits(model_dir, sequences, types)
        assert got.shape == (len(queries), 1 if kind == "reranker" else len(CLASSIFIER_LABELS))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "camembert"])
def test_broadcast_padding_mask_changes_nothing(family: str, family_dirs: dict[str, Path], onnx_cache: Path) -> None:
    # These classes get a [B, 1, L] mask (broadcast per row) instead of the 2D mask
    # transformers expands to [B, 1, L, L]: padded rows must come out as before.
    model_dir = family_dirs[family]
    pooling = FAMILIES[family][3]
    batch, _, _ = encode(model_dir, TEXTS)
    assert any(c.lengths.min() < c.lengths.max() for c in padded_chunks(batch, None, 0))  # some rows are padded
    backend = load_engine("torch", EngineSpec(model_dir, "cpu", "", pooling, onnx_cache))
    assert backend.broadcast_mask  # type: ignore[attr-defined]
    broadcast = backend.embed(batch).pooled  # type: ignore[attr-defined]
    backend.broadcast_mask = False  # type: ignore[attr-defined]
    expanded = backend.embed(batch).pooled  # type: ignore[attr-defined]
    np.testing.assert_allclose(broadcast, expanded, rtol=0, atol=1e-5)
