"""/embed_all, /embed_sparse, /similarity, /tokenize, /decode, prompts, auth and CORS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedserve.router import swagger_ui
from tests.conftest import RunningServer, start_server
from tests.models import add_prompts


def _post(server: RunningServer, path: str, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hf_tokenizer(model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _hidden_states(model_dir: Path, tokenizer, text: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].numpy()  # type: ignore[no-any-return]


def test_embed_all_matches_transformers(server: RunningServer, model_dir: Path, hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    texts = ["per token vectors", "a second, longer input with more tokens than the first"]
    response = _post(server, "/embed_all", {"inputs": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    for text, got in zip(texts, body):
        expected = _hidden_states(model_dir, hf_tokenizer, text)
        assert np.asarray(got).shape == expected.shape
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4)


def test_embed_all_and_pooled_in_one_batch(server: RunningServer) -> None:
    import asyncio

    async def both() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            a, b = await asyncio.gather(
                client.post(f"{server.url}/embed_all", json={"inputs": ["mixed batch"] * 8}),
                client.post(f"{server.url}/embed", json={"inputs": ["mixed batch"] * 8}),
            )
            return a, b

    raw, pooled = asyncio.run(both())
    assert raw.status_code == pooled.status_code == 200
    mean = np.asarray(raw.json()[0]).mean(axis=0)
    np.testing.assert_allclose(mean / np.linalg.norm(mean), np.asarray(pooled.json()[0]), atol=1e-5)


def test_similarity(server: RunningServer) -> None:
    source, sentences = "a cat sits on the mat", ["a cat is on a mat", "stock markets fell today"]
    response = _post(server, "/similarity", {"inputs": {"source_sentence": source, "sentences": sentences}})
    assert response.status_code == 200, response.text
    vectors = np.asarray(_post(server, "/embed", {"inputs": [source, *sentences], "normalize": False}).json())
    expected = [float(v @ vectors[0] / np.linalg.norm(v) / np.linalg.norm(vectors[0])) for v in vectors[1:]]
    assert response.json() == pytest.approx(expected, abs=1e-4)
    empty = _post(server, "/similarity", {"inputs": {"source_sentence": source, "sentences": []}})
    assert empty.status_code == 400 and empty.json()["error"] == "`inputs.sentences` cannot be empty"
    over = _post(server, "/similarity", {"inputs": {"source_sentence": source, "sentences": ["x"] * 32}})
    assert over.status_code == 422


def test_tokenize_and_decode(server: RunningServer, hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "Zürich café"
    tokens = _post(server, "/tokenize", {"inputs": text}).json()
    assert len(tokens) == 1
    assert [t["id"] for t in tokens[0]] == hf_tokenizer(text)["input_ids"]
    first, *middle, last = tokens[0]
    assert first == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert last["special"] and last["text"] == "[SEP]"
    encoded = text.encode()
    for token in middle:
        assert not token["special"]
        assert encoded[token["start"] : token["stop"]].decode() == token["text"]
    plain = _post(server, "/tokenize", {"inputs": [text, "b"], "add_special_tokens": False}).json()
    assert len(plain) == 2 and not any(t["special"] for t in plain[0])

    ids = [t["id"] for t in tokens[0]]
    assert _post(server, "/decode", {"ids": ids}).json() == [hf_tokenizer.decode(ids, skip_special_tokens=True)]
    assert _post(server, "/decode", {"ids": [ids, ids], "skip_special_tokens": False}).json() == [
        hf_tokenizer.decode(ids)
    ] * 2
    assert _post(server, "/decode", {"ids": []}).status_code == 400
    assert _post(server, "/decode", {"ids": [10**7]}).status_code == 422
    assert _post(server, "/tokenize", {"inputs": []}).status_code == 400


def test_wrong_routes_for_an_embedding_model(server: RunningServer) -> None:
    predict = _post(server, "/predict", {"inputs": "x"})
    assert (predict.status_code, predict.json()["error"]) == (424, "Backend error: Model is not a classifier model")
    sparse = _post(server, "/embed_sparse", {"inputs": "x"})
    assert sparse.json()["error"] == "Backend error: Model is not an embedding model with SPLADE pooling"
    assert _post(server, "/rerank", {"query": "q", "texts": ["a"]}).status_code == 424


def test_default_routes_and_vertex(server: RunningServer) -> None:
    embed = _post(server, "/embed", {"inputs": "route"}).json()
    for path in ("/", "/invocations"):
        np.testing.assert_allclose(_post(server, path, {"inputs": "route"}).json(), embed, atol=1e-6)
    vertex = _post(server, "/vertex", {"instances": [{"inputs": "route"}, {"inputs": ["a", "b"]}]})
    assert vertex.status_code == 200
    predictions = vertex.json()["predictions"]
    assert len(predictions) == 2 and len(predictions[1]) == 2
    np.testing.assert_allclose(predictions[0], embed, atol=1e-6)
    assert _post(server, "/vertex", {"instances": [{"bad": 1}]}).status_code == 422


def test_openapi_and_docs(server: RunningServer) -> None:
    document = httpx.get(f"{server.url}/api-doc/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/embed", "/embed_all", "/embed_sparse", "/predict", "/rerank", "/similarity", "/tokenize",
                 "/decode", "/v1/embeddings", "/embeddings", "/vertex", "/invocations"):
        assert "requestBody" in document["paths"][path]["post"], path
    assert "EmbedRequest" in document["components"]["schemas"]
    assert httpx.get(f"{server.url}/docs").status_code == 200


# ------------------------------------------------------------------ SPLADE


@pytest.fixture(scope="module")
def splade(splade_server: RunningServer) -> RunningServer:
    return splade_server  # the session's server on `splade_dir` (conftest): --pooling splade


def test_embed_sparse_matches_transformers(splade: RunningServer, splade_dir: Path) -> None:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    text = "sparse lexical expansion"
    tokenizer = AutoTokenizer.from_pretrained(splade_dir)
    model = AutoModelForMaskedLM.from_pretrained(splade_dir).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
    expected = torch.log1p(torch.relu(logits)).max(dim=0).values.numpy()

    response = _post(splade, "/embed_sparse", {"inputs": [text]})
    assert response.status_code == 200, response.text
    [sparse] = response.json()
    indices = [entry["index"] for entry in sparse]
    assert indices == sorted(indices) and indices == np.flatnonzero(expected).tolist()
    np.testing.assert_allclose([entry["value"] for entry in sparse], expected[indices], atol=1e-4)
    assert _post(splade, "/", {"inputs": text}).json() == response.json()


def test_splade_refuses_dense_routes(splade: RunningServer) -> None:
    normalize = _post(splade, "/embed", {"inputs": "x"})
    assert normalize.status_code == 424
    assert normalize.json()["error"] == "Backend error: `normalize` is not available for SPLADE models"
    assert _post(splade, "/embed", {"inputs": "x", "normalize": False}).status_code == 200
    assert _post(splade, "/embed_all", {"inputs": "x"}).json()["error"] == (
        "Backend error: `embed_all` is not available for SPLADE models"
    )
    assert _post(splade, "/v1/embeddings", {"input": "x"}).status_code == 424
    assert httpx.get(f"{splade.url}/info").json()["model_type"] == {"embedding": {"pooling": "splade"}}


# ------------------------------------------------------------------ prompts, auth, CORS, payload limit

KEY = "s3cret"
PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def guarded(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    copy = tmp_path_factory.mktemp("models") / "minilm-prompts"
    copy.mkdir()
    for entry in model_dir.iterdir():
        os.symlink(entry, copy / entry.name)
    os.unlink(copy / "config_sentence_transformers.json")
    add_prompts(copy, PROMPTS)
    args = ("--model-id", str(copy), "--default-prompt-name", "query", "--api-key", KEY,
            "--cors-allow-origin", "http://allowed.example", "--payload-limit", "5000")
    with start_server(*args, tmp_dir=tmp_path_factory.mktemp("guarded")) as running:
        yield running


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_api_key(guarded: RunningServer) -> None:
    missing = _post(guarded, "/embed", {"inputs": "x"})
    assert missing.status_code == 401 and missing.content == b""
    assert _post(guarded, "/embed", {"inputs": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _post(guarded, "/embed", {"inputs": "x"}, headers=AUTH).status_code == 200
    assert httpx.get(f"{guarded.url}/info").status_code == 401
    for public in ("/health", "/ping", "/", "/metrics", "/docs", "/api-doc/openapi.json",
                   f"{swagger_ui.ASSET_PREFIX}swagger-ui.css"):
        assert httpx.get(f"{guarded.url}{public}").status_code == 200, public


def test_prompts(guarded: RunningServer, sentence_transformer) -> None:  # type: ignore[no-untyped-def]
    default = np.asarray(_post(guarded, "/embed", {"inputs": "tea"}, headers=AUTH).json()[0])
    passage = np.asarray(_post(guarded, "/embed", {"inputs": "tea", "prompt_name": "passage"}, headers=AUTH).json()[0])
    np.testing.assert_allclose(default, sentence_transformer.encode("query: tea"), atol=1e-4)
    np.testing.assert_allclose(passage, sentence_transformer.encode("passage: tea"), atol=1e-4)
    unknown = _post(guarded, "/embed", {"inputs": "tea", "prompt_name": "nope"}, headers=AUTH)
    assert unknown.status_code == 422 and "Available prompts: passage, query" in unknown.json()["error"]
    tokens = _post(guarded, "/tokenize", {"inputs": "tea"}, headers=AUTH).json()[0]
    assert [t["text"] for t in tokens] == ["[CLS]", "query", ":", "tea", "[SEP]"]


def test_cors_and_payload_limit(guarded: RunningServer) -> None:
    preflight = httpx.options(
        f"{guarded.url}/embed",
        headers={"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers.get("access-control-allow-origin") == "http://allowed.example"
    other = httpx.options(
        f"{guarded.url}/embed", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers
    big = _post(guarded, "/embed", {"inputs": "a" * 6000}, headers=AUTH)
    assert big.status_code == 413 and big.json()["error_type"] == "Validation"
