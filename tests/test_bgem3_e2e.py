"""bge-m3 (issue 15): dense, lexical (sparse) and multi-vector (ColBERT) outputs of a
tiny bge-m3 served over HTTP, against a reference that follows FlagEmbedding's
BGEM3FlagModel (EncoderOnlyEmbedderM3Model and M3Embedder.encode_single_device).

The FlagEmbedding package itself is not used: 1.4.2 imports `datasets` (and with it
pyarrow, dill, multiprocess, ...) at `import FlagEmbedding`, through its fine-tuning
modules, so it does not import with --no-deps on the server's pins. The reference
below computes what its inference path computes, with transformers and the two head
files.

One server for the module, with two router processes, so the outputs also cross
the front <-> queue owner link (router/remote_queue.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from embedserve.proto.gen_pb import tei_pb2, tei_pb2_grpc
from tests.conftest import RunningServer, start_server
from tests.models import build_bgem3_model

TEXTS = [
    "The quick brown fox jumps over the lazy dog, and the dog does not mind the fox at all.",
    "bge-m3 answers dense, sparse and multi-vector embeddings from one forward pass",
    "short",
    "repeat repeat repeat the word repeat",
]
LONG_TEXT = " ".join(f"word{i} and more words" for i in range(80))  # well over the 128-token limit
MAX_INPUT_LENGTH = 128  # max_position_embeddings 130 less RoBERTa's padding offset


@dataclass(frozen=True)
class Reference:
    dense: list[np.ndarray]
    lexical: list[dict[int, float]]
    multi_vectors: list[np.ndarray]


class FlagReference:
    """BGEM3FlagModel's outputs on the tiny model, in float32 on CPU."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()
        hidden = self.model.config.hidden_size
        self.colbert = torch.nn.Linear(hidden, hidden)
        self.colbert.load_state_dict(torch.load(model_dir / "colbert_linear.pt", weights_only=True))
        self.sparse = torch.nn.Linear(hidden, 1)
        self.sparse.load_state_dict(torch.load(model_dir / "sparse_linear.pt", weights_only=True))
        # M3Embedder's `_process_token_weights`: these special tokens carry no lexical weight.
        self.unused = {self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens_map[name])
                       for name in ("cls_token", "eos_token", "pad_token", "unk_token")
                       if name in self.tokenizer.special_tokens_map}

    def encode(self, texts: list[str], normalize: bool, direction: str = "right") -> Reference:
        torch = self._torch
        self.tokenizer.truncation_side = direction
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_INPUT_LENGTH, return_tensors="pt")
        with torch.inference_mode():
            states = self.model(**batch).last_hidden_state
            dense = states[:, 0]
            token_weights = torch.relu(self.sparse(states)).squeeze(-1)
            colbert = self.colbert(states[:, 1:]) * batch["attention_mask"][:, 1:, None].float()
            if normalize:
                dense = torch.nn.functional.normalize(dense, dim=-1)
                colbert = torch.nn.functional.normalize(colbert, dim=-1)
        lexical: list[dict[int, float]] = []
        multi_vectors: list[np.ndarray] = []
        for row in range(len(texts)):
            weights: dict[int, float] = {}
            for weight, token in zip(token_weights[row].tolist(), batch["input_ids"][row].tolist()):
                if token not in self.unused and weight > 0 and weight > weights.get(token, 0.0):
                    weights[token] = weight
            lexical.append(weights)
            tokens = int(batch["attention_mask"][row].sum())
            multi_vectors.append(colbert[row, : tokens - 1].numpy())
        return Reference(list(dense.numpy()), lexical, multi_vectors)


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return build_bgem3_model(tmp_path_factory.mktemp("bge-m3") / "model", model_dir)


@pytest.fixture(scope="module")
def reference(m3_dir: Path) -> FlagReference:
    return FlagReference(m3_dir)


@pytest.fixture(scope="module")
def m3(m3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server("--model-id", str(m3_dir), "--auto-truncate", tmp_dir=tmp_path_factory.mktemp("m3-server"),
                      env={"ROUTER_WORKERS": "2"}) as running:
        yield running


def _post(server: RunningServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def _sparse(answer: list[dict[str, Any]]) -> dict[int, float]:
    indices = [item["index"] for item in answer]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    return {item["index"]: item["value"] for item in answer}


def _assert_lexical(got: dict[int, float], expected: dict[int, float]) -> None:
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-4, atol=1e-5)


def _assert_vectors(got: object, expected: np.ndarray) -> None:
    matrix = np.asarray(got, dtype=np.float32)
    assert matrix.shape == expected.shape
    np.testing.assert_allclose(matrix, expected, rtol=1e-4, atol=1e-5)


def test_the_launcher_picks_torch_for_bge_m3(m3: RunningServer) -> None:
    assert "backend torch (chosen)" in m3.log()


def test_embed_is_the_dense_cls_vector(m3: RunningServer, reference: FlagReference) -> None:
    expected = reference.encode(TEXTS, normalize=True)
    got = _post(m3, "/embed", {"inputs": TEXTS}).json()
    for row, dense in zip(got, expected.dense):
        _assert_vectors(row, dense)


def test_embed_sparse_answers_the_lexical_weights(m3: RunningServer, reference: FlagReference) -> None:
    expected = reference.encode(TEXTS, normalize=False)
    got = _post(m3, "/embed_sparse", {"inputs": TEXTS}).json()
    assert len(got) == len(TEXTS)
    for answer, lexical in zip(got, expected.lexical):
        _assert_lexical(_sparse(answer), lexical)
    # "repeat" occurs four times: one entry, its largest weight.
    single = _post(m3, "/embed_sparse", {"inputs": TEXTS[3]}).json()
    _assert_lexical(_sparse(single[0]), expected.lexical[3])


@pytest.mark.parametrize("normalize", [True, False])
def test_multi_vector_route(m3: RunningServer, reference: FlagReference, normalize: bool) -> None:
    expected = reference.encode(TEXTS, normalize=normalize)
    got = _post(m3, "/embed_multi_vector", {"inputs": TEXTS, "normalize": normalize}).json()
    assert len(got) == len(TEXTS)
    for matrix, vectors in zip(got, expected.multi_vectors):
        _assert_vectors(matrix, vectors)
    if normalize:
        assert np.allclose(np.linalg.norm(np.asarray(got[0]), axis=1), 1.0, atol=1e-5)
    # A single input is answered as a batch of one, as /embed does.
    single = _post(m3, "/embed_multi_vector", {"inputs": TEXTS[2], "normalize": normalize}).json()
    _assert_vectors(single[0], expected.multi_vectors[2])


def test_hybrid_answers_all_three_from_one_pass(m3: RunningServer, reference: FlagReference) -> None:
    normalized, raw = reference.encode(TEXTS, normalize=True), reference.encode(TEXTS, normalize=False)
    got = _post(m3, "/embed_hybrid", {"inputs": TEXTS}).json()
    assert len(got) == len(TEXTS)
    for i, answer in enumerate(got):
        assert set(answer) == {"dense", "sparse", "multi_vector"}
        _assert_vectors(answer["dense"], normalized.dense[i])
        _assert_lexical(_sparse(answer["sparse"]), raw.lexical[i])
        _assert_vectors(answer["multi_vector"], normalized.multi_vectors[i])
    some = _post(m3, "/embed_hybrid", {"inputs": TEXTS[:2], "outputs": ["sparse"], "normalize": False}).json()
    assert [set(answer) for answer in some] == [{"sparse"}, {"sparse"}]
    unnormalized = _post(m3, "/embed_hybrid", {"inputs": TEXTS[1], "outputs": ["dense", "multi_vector"],
                                               "normalize": False}).json()
    _assert_vectors(unnormalized[0]["dense"], raw.dense[1])
    _assert_vectors(unnormalized[0]["multi_vector"], raw.multi_vectors[1])
    empty = _post(m3, "/embed_hybrid", {"inputs": "x", "outputs": []})
    assert empty.status_code == 422 and "outputs" in empty.json()["error"]
    unknown = _post(m3, "/embed_hybrid", {"inputs": "x", "outputs": ["splade"]})
    assert unknown.status_code == 422


@pytest.mark.parametrize("direction", ["right", "left"])
def test_truncation(m3: RunningServer, reference: FlagReference, direction: str) -> None:
    expected = reference.encode([LONG_TEXT, TEXTS[0]], normalize=True, direction=direction)
    body = {"inputs": [LONG_TEXT, TEXTS[0]], "truncate": True, "truncation_direction": direction}
    got = _post(m3, "/embed_hybrid", body).json()
    assert len(got[0]["multi_vector"]) == MAX_INPUT_LENGTH - 1
    for answer, dense, vectors in zip(got, expected.dense, expected.multi_vectors):
        _assert_vectors(answer["dense"], dense)
        _assert_vectors(answer["multi_vector"], vectors)
    raw = reference.encode([LONG_TEXT], normalize=False, direction=direction)
    sparse = _post(m3, "/embed_sparse", body | {"inputs": LONG_TEXT}).json()
    _assert_lexical(_sparse(sparse[0]), raw.lexical[0])
    refused = _post(m3, "/embed_multi_vector", {"inputs": LONG_TEXT, "truncate": False})
    assert refused.status_code == 422 and "must have less than" in refused.json()["error"], refused.text


def test_grpc_embed_sparse_answers_the_lexical_weights(m3: RunningServer, reference: FlagReference) -> None:
    expected = reference.encode(TEXTS[:1], normalize=False).lexical[0]
    with grpc.insecure_channel(m3.grpc_target) as channel:
        response = tei_pb2_grpc.EmbedStub(channel).EmbedSparse(tei_pb2.EmbedSparseRequest(inputs=TEXTS[0]))
    _assert_lexical({v.index: v.value for v in response.sparse_embeddings}, expected)


def test_mixed_requests_at_once_each_get_their_own_outputs(m3: RunningServer, reference: FlagReference) -> None:
    """Concurrent calls for different outputs share batches (a batch computes the union)."""
    normalized, raw = reference.encode(TEXTS, normalize=True), reference.encode(TEXTS, normalize=False)
    calls: list[tuple[str, dict[str, Any]]] = []
    for text_index in range(len(TEXTS)):
        text = TEXTS[text_index]
        calls += [("/embed", {"inputs": text}), ("/embed_sparse", {"inputs": text}),
                  ("/embed_multi_vector", {"inputs": text}), ("/embed_all", {"inputs": text}),
                  ("/embed_hybrid", {"inputs": text, "outputs": ["sparse", "multi_vector"]})]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        answers = list(pool.map(lambda call: _post(m3, *call), calls))
    for (path, body), response in zip(calls, answers):
        assert response.status_code == 200, response.text
        i = TEXTS.index(body["inputs"])
        got = response.json()[0]
        if path == "/embed":
            _assert_vectors(got, normalized.dense[i])
        elif path == "/embed_sparse":
            _assert_lexical(_sparse(got), raw.lexical[i])
        elif path == "/embed_multi_vector":
            _assert_vectors(got, normalized.multi_vectors[i])
        elif path == "/embed_all":
            assert len(got) == len(normalized.multi_vectors[i]) + 1
        else:
            _assert_lexical(_sparse(got["sparse"]), raw.lexical[i])
            _assert_vectors(got["multi_vector"], normalized.multi_vectors[i])


def test_openai_multi_vector_option(m3: RunningServer, reference: FlagReference) -> None:
    expected = reference.encode(TEXTS[:2], normalize=True)
    body = {"input": TEXTS[:2], "model": "m3", "embedding_type": "multi_vector"}
    got = _post(m3, "/v1/embeddings", body).json()
    assert got["object"] == "list" and [item["index"] for item in got["data"]] == [0, 1]
    for item, vectors in zip(got["data"], expected.multi_vectors):
        _assert_vectors(item["embedding"], vectors)
    encoded = _post(m3, "/v1/embeddings", body | {"encoding_format": "base64"}).json()
    decoded = [np.frombuffer(base64.b64decode(text), "<f4") for text in encoded["data"][0]["embedding"]]
    _assert_vectors(decoded, expected.multi_vectors[0])
    # Without the option the answer is the dense one, unchanged.
    plain = _post(m3, "/v1/embeddings", {"input": TEXTS[:2]}).json()
    for item, dense in zip(plain["data"], expected.dense):
        _assert_vectors(item["embedding"], dense)
    dims = _post(m3, "/v1/embeddings", body | {"dimensions": 8})
    assert dims.status_code == 422 and dims.json()["type"] == "Validation"


def test_models_without_the_heads_refuse_the_bge_m3_routes(server: RunningServer) -> None:
    """All-MiniLM has no heads: TEI's unsupported-route error, as /embed_sparse on a non-SPLADE model."""
    for path, body in (("/embed_multi_vector", {"inputs": "x"}),
                       ("/embed_hybrid", {"inputs": "x", "outputs": ["sparse"]}),
                       ("/embed_hybrid", {"inputs": "x", "outputs": ["dense", "multi_vector"]})):
        response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
        assert response.status_code == 424, response.text
        assert response.json()["error_type"] == "Backend" and "bge-m3" in response.json()["error"]
    sparse = httpx.post(f"{server.url}/embed_sparse", json={"inputs": "x"}, timeout=60).json()
    assert sparse["error"] == "Backend error: Model is not an embedding model with SPLADE pooling"
    openai = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x", "embedding_type": "multi_vector"},
                        timeout=60)
    assert openai.status_code == 424 and "bge-m3" in openai.json()["message"]
