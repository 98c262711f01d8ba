"""Families served through a real server on a real port: a DeBERTa-v2 reranker on
/rerank and /predict, against transformers computing the same pairs; an
embeddinggemma-shaped Gemma3 pipeline on /embed, against sentence-transformers; a
gte-Qwen2-shaped last-token embedder on /embed, its shipped code never run; a
NomicBERT and a JinaBERT on /embed, on our own implementations, against their shipped code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.backends.parity import cosine, embed_over_http, encode, reference_pooled, st_encode
from tests.conftest import RunningServer, start_server
from tests.models import (
    add_dense_modules,
    build_family_classifier,
    build_family_model,
    build_gte_qwen2_model,
    build_jina_bert_model,
    build_nomic_model,
)

QUERY = "what is the capital of france"
TEXTS = ["Paris is the capital of France.", "Berlin is in Germany and has many museums and parks.", "bananas",
         "the eiffel tower stands in paris, built for the world fair of 1889"]


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


@pytest.fixture(scope="module")
def deberta_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_family_classifier("deberta-v2", tmp_path_factory.mktemp("models") / "deberta", model_dir)


@pytest.fixture(scope="module")
def deberta(deberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(deberta_dir), tmp_dir=tmp_path_factory.mktemp("deberta")) as running:
        yield running


def _pair_logits(model_dir: Path, first: str, second: str) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        return model(**tokenizer(first, second, return_tensors="pt")).logits[0].numpy()  # type: ignore[no-any-return]


def test_deberta_reranker_serves_rerank_and_predict(deberta: RunningServer, deberta_dir: Path) -> None:
    info = httpx.get(f"{deberta.url}/info").json()
    assert "reranker" in info["model_type"] and info["backend"] == "onnx"  # auto's choice on CPU
    response = _post(deberta, "/rerank", {"query": QUERY, "texts": TEXTS, "raw_scores": True})
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert sorted(r["index"] for r in ranks) == list(range(len(TEXTS)))
    for rank in ranks:
        assert rank["score"] == pytest.approx(_pair_logits(deberta_dir, QUERY, TEXTS[rank["index"]])[0], abs=1e-4)
    single = _post(deberta, "/predict", {"inputs": [QUERY, TEXTS[0]]}).json()
    expected = 1 / (1 + np.exp(-_pair_logits(deberta_dir, QUERY, TEXTS[0])[0]))
    assert single == [{"score": pytest.approx(expected, abs=1e-4), "label": "LABEL_0"}]


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    # embeddinggemma's pipeline: mean pooling, then two bias-free identity Dense layers.
    base = build_family_model("gemma3", tmp_path_factory.mktemp("models") / "gemma3", model_dir)
    return add_dense_modules(base, [(48, "Identity", False), (24, "Identity", False)])


@pytest.fixture(scope="module")
def gemma(gemma_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(gemma_dir), tmp_dir=tmp_path_factory.mktemp("gemma")) as running:
        yield running


def test_gemma3_pipeline_matches_sentence_transformers(gemma: RunningServer, gemma_dir: Path) -> None:
    info = httpx.get(f"{gemma.url}/info").json()
    assert (info["model_dtype"], info["backend"]) == ("float32", "onnx")
    for texts in (TEXTS, TEXTS[1:2]):  # a padded batch of mixed lengths, and one text
        got = embed_over_http(gemma.url, texts)
        expected = st_encode(gemma_dir, texts)
        assert got.shape == expected.shape == (len(texts), 24)
        assert cosine(got, expected).min() >= 0.9999


@pytest.fixture(scope="module")
def gte_qwen2_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_gte_qwen2_model(tmp_path_factory.mktemp("models") / "gte-qwen2", model_dir)


@pytest.fixture(scope="module")
def gte_qwen2(gte_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(gte_qwen2_dir), tmp_dir=tmp_path_factory.mktemp("gte-qwen2")) as running:
        yield running


def test_gte_qwen2_last_token_embeddings(gte_qwen2: RunningServer, gte_qwen2_dir: Path) -> None:
    info = httpx.get(f"{gte_qwen2.url}/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert info["backend"] == "onnx"  # exported as transformers' Qwen2, not python
    for texts in (TEXTS, TEXTS[3:4]):  # a padded batch of mixed lengths: each row's last real token
        got = embed_over_http(gte_qwen2.url, texts, normalize=False)
        _, sequences, _ = encode(gte_qwen2_dir, texts)
        assert cosine(got, reference_pooled(gte_qwen2_dir, sequences, "last_token")).min() >= 0.9999
    assert "the shipped modeling code was run" not in gte_qwen2.log()


@pytest.mark.parametrize("family", ["nomic_bert", "jina_bert"])
def test_shipped_code_families_served_natively(family: str, model_dir: Path, tmp_path: Path) -> None:
    build = build_nomic_model if family == "nomic_bert" else build_jina_bert_model
    family_dir = build(tmp_path / family, model_dir)
    with start_server("--model-id", str(family_dir), tmp_dir=tmp_path) as server:
        assert httpx.get(f"{server.url}/info").json()["backend"] == "torch"  # not python (its code)
        got = embed_over_http(server.url, TEXTS)
    expected = st_encode(family_dir, TEXTS, trust_remote_code=True)  # the shipped code, mean pooled
    assert cosine(got, expected).min() >= 0.9999
